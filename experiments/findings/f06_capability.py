"""F6: RL helps the questions the base can already solve sometimes, SFT the ones beyond it;
ReLIFT (RL, plus SFT on the prompts whose whole group failed) should get both with few demos."""

from __future__ import annotations

import json

from experiments.findings.common import Ctx, Result, evaluate_model, fmt, mean, plot_path, pyplot
from experiments.findings.hybrid_bench import (
    BASE_STAGE,
    BASE_TEXT,
    N_EVAL,
    PROMPTS,
    STEPS,
    base_row,
    base_run,
    base_tree,
    bench_rows,
    by_arm,
    judge,
    paired,
    solved,
)

ID = "F6"
TITLE = "RL helps questions within the base's capability, SFT those beyond it; ReLIFT aims for both"
SHORT = "RL helps in-capability, SFT beyond; ReLIFT both, few demos (Ma et al.)"
PAPER = ('Ma et al. 2025, "Learning What Reinforcement Learning Can\'t: Interleaved Online Fine-Tuning for '
         'Hardest Questions" (ReLIFT), arXiv:2506.07527')
CLAIM = ("RL improves the questions the model can already solve sometimes, SFT the ones it cannot solve at all; "
         "interleaving SFT on the hardest questions with RL (ReLIFT) gets both while using a small share of the "
         "demonstrations.")
SETUP = f"""The shared hybrid bench (`experiments/findings/hybrid_bench.py`, adapted from
`experiments/hybrids.py`): the micro model {BASE_TEXT}
on noisy demonstrations (half the answers corrupted) of 2-digit addition (**easy**) and 3-digit
addition (**earlier**); 2-digit subtraction (**hard**) is never shown to it. From that one base each arm
trains {STEPS} steps on easy + hard at lr 2e-4: **rl_only** (PPO-clip GRPO, {PROMPTS} prompts x 8 samples),
**sft_only** ({PROMPTS * 8} gold demonstrations per step, as many sequences as RL), **reft** (half the steps
SFT, then RL) and **relift** (RL; every time {PROMPTS} prompts whose whole group failed have gathered, one
SFT step on their demonstrations). The test problems (100 easy, 100 hard) are bucketed by the **base's**
pass rate on them in its stage-end evaluation (16 samples): 0, (0, 0.5), [0.5, 1]; each arm's pass@1
({N_EVAL} samples at temperature 1) is averaged per bucket. The base row is an independent re-evaluation of the
base (sampling seed 1), so its bucket means are not biased by the selection. Demonstrations consumed are
the summed `data/demos` of a run, relative to sft_only. Data are fixed (the base's seed-0 pools, read as
files); seeds 0, 1, 2 vary the arms' prompt order and sampling. Differs from the paper: a 1.8M-parameter
model, {STEPS} steps, arithmetic instead of competition math, ReLIFT's buffer filled from the training
batch (no separate hardest-question selection pass). Budget cut to fit two shared cores: {STEPS} steps per
arm and {N_EVAL} samples per test problem (hybrids.py: 100 steps, 16 samples)."""
BUDGET = "≈ 15 CPU-min for 3 seeds (4 arms x 3 seeds of 24 steps, shared with F3 and F7; 40 min wall)"
READING = """- Bucket 0 is the 98 subtraction (hard) problems the base never solved. Only the arms with
  demonstrations move it, and barely: 0.3 ± 0.2 % pass@1 for SFT, 0.2 % for ReFT and ReLIFT, 0.0 for RL,
  whose groups there never hold a reward. Direction as the paper, size negligible after 24 steps.
- In the buckets the base can already solve, RL keeps the base's level rather than raising it: 35.8 ± 12.6
  vs 35.0 (0, 0.5) and 54.7 ± 22.3 vs 52.2 [0.5, 1] (independent re-evaluation of the base); one seed
  degraded (easy pass@1 27.5 %), the other two gained 5-12 points on easy. RL > SFT there holds mostly
  because SFT collapses these buckets (9.3 and 11.0 %): its first steps on the unseen subtraction traces
  (SFT loss 4.3 at step 1) disrupt addition at lr 2e-4; `docs/hybrids_experiment.md` shows SFT recovering to
  76 % on easy after 100 steps, so this is the early, disruptive phase of SFT.
- ReLIFT consumes 8 % of SFT's demonstrations (the paper: 13 %) but does not get both: 9.8 ± 4.1 % on all
  easy + hard, below RL (24.1) and level with SFT (5.4) within the spread; its SFT steps on the all-fail
  subtraction prompts carry the same disruption. The ReLIFT part of the claim is reversed here."""
ARMS = ["rl_only", "sft_only", "reft", "relift"]
BUCKETS = ("0", "(0, 0.5)", "[0.5, 1]")
SOURCES = ("easy", "hard")


def bucket_of(rate: float) -> str:
    return BUCKETS[0] if rate == 0 else BUCKETS[1] if rate < 0.5 else BUCKETS[2]


def buckets(ctx: Ctx) -> dict[str, str]:
    """Test prompt (easy + hard) -> bucket, by the base's stage-end pass rate on it."""
    return {p: bucket_of(c / n) for p, (src, c, n) in base_row(ctx)["solved"].items() if src in SOURCES}


def bucket_pass(row: dict, members: dict[str, str]) -> dict[str, float]:
    """pass@1 per bucket (and "all" easy + hard) of one row's per-problem records."""
    rates: dict[str, list[float]] = {b: [] for b in (*BUCKETS, "all")}
    for prompt, (_src, c, n) in row["solved"].items():
        if prompt in members:
            rates[members[prompt]].append(c / n)
            rates["all"].append(c / n)
    return {b: mean(v) for b, v in rates.items()}


def base_recheck(ctx: Ctx) -> dict:
    """The base re-evaluated with sampling seed 1 (cached): per-problem records, same test set."""
    path = ctx.dir(ID, "base_seed1.json")
    if path.is_file():
        return json.loads(path.read_text())
    tree = base_tree()
    tree["data"]["test_size"] = ctx.size(100)
    tree["data"]["tasks"] = [t for t in tree["data"]["tasks"] if t["label"] in SOURCES]  # same draws: same seeds
    (summary, records), = evaluate_model(base_run(ctx) / "models" / BASE_STAGE, tree, n=ctx.samples(N_EVAL), ks=[1],
                                         seed=1).values()
    row = {"arm": "base", "seed": 1, "solved": solved(records)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))
    return row


def run(ctx: Ctx) -> Result:
    members = buckets(ctx)
    rows = bench_rows(ctx, ARMS)
    arms = by_arm(rows)
    per = {a: [bucket_pass(r, members) for r in rs] for a, rs in arms.items() if a in ARMS}
    base = bucket_pass(base_recheck(ctx), members)
    sft_demos = mean(r["demos"] for r in arms["sft_only"]) or float("nan")
    frac = {a: [r["demos"] / sft_demos for r in arms[a]] for a in ARMS}
    sizes = {b: sum(1 for v in members.values() if v == b) for b in BUCKETS}
    head = " | ".join(f"bucket {b} (n={sizes[b]})" for b in BUCKETS)
    lines = [f"| arm (pass@1 %) | {head} | all easy + hard | demos used (% of sft_only) |",
             "|---|---|---|---|---|---|",
             "| base (re-evaluated) | " + " | ".join(fmt([base[b]]) for b in (*BUCKETS, "all")) + " | - |"]
    for a in ARMS:
        lines.append(f"| {a} | " + " | ".join(fmt([p[b] for p in per[a]]) for b in (*BUCKETS, "all"))
                     + f" | {fmt(frac[a])} |")
    verdict, reason, headline = judge_f6(rows, members, frac)
    return Result(verdict, reason, headline, "\n".join(lines), plot(ctx, per, base, sizes))


def judge_f6(rows: list[dict], members: dict[str, str], frac: dict) -> tuple[str, str, str]:
    """Three paired comparisons (hybrid_bench.judge: the mean difference over seeds must exceed
    its std): RL > SFT in the (0, 0.5) bucket; SFT > RL in the 0 bucket; ReLIFT > both RL and
    SFT on all easy + hard with under half of SFT's demonstrations."""
    def at(b):
        return lambda r: bucket_pass(r, members)[b]

    mid = paired(rows, "rl_only", "sft_only", at(BUCKETS[1]))
    zero = paired(rows, "sft_only", "rl_only", at(BUCKETS[0]))
    vs_rl = paired(rows, "relift", "rl_only", at("all"))
    vs_sft = paired(rows, "relift", "sft_only", at("all"))
    few = mean(frac["relift"]) < 0.5
    both = judge(*vs_rl), judge(*vs_sft)
    relift = "holds" if both == ("holds", "holds") and few else \
        "reversed" if "reversed" in both else "unclear"
    parts = {"RL > SFT on (0, 0.5)": judge(*mid), "SFT > RL on 0": judge(*zero), "ReLIFT > both": relift}
    held = sum(v == "holds" for v in parts.values())
    verdict = "reproduced" if held == 3 else "partly" if held else \
        "inconclusive" if all(v == "unclear" for v in parts.values()) else "not reproduced"
    pts = lambda d: f"{100 * d[0]:+.1f} ± {100 * d[1]:.1f}"  # noqa: E731
    reason = (f"rule: each paired difference must exceed its std over seeds; all three hold -> reproduced, some -> "
              f"partly, none (one reversed) -> not reproduced, all unclear -> inconclusive. RL - SFT on (0, 0.5): "
              f"{pts(mid)} points ({parts['RL > SFT on (0, 0.5)']}); SFT - RL on 0: {pts(zero)} "
              f"({parts['SFT > RL on 0']}); ReLIFT - RL on all: {pts(vs_rl)}, ReLIFT - SFT: {pts(vs_sft)}, "
              f"with {100 * mean(frac['relift']):.0f} % of SFT's demonstrations ({relift}).")
    headline = (f"RL-SFT on (0,0.5): {100 * mid[0]:+.1f}; SFT-RL on 0: {100 * zero[0]:+.1f}; "
                f"ReLIFT-best: {100 * min(vs_rl[0], vs_sft[0]):+.1f} pts, {100 * mean(frac['relift']):.0f} % demos")
    return verdict, reason, headline


def plot(ctx: Ctx, per: dict, base: dict, sizes: dict):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = ["base", *ARMS]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [[base[b]] if name == "base" else [p[b] for p in per[name]] for b in BUCKETS]
        means = [100 * mean(v) for v in vals]
        sds = [100 * (sum((x - mean(v)) ** 2 for x in v) / max(1, len(v) - 1)) ** 0.5 for v in vals]
        ax.bar([j + (i - (len(names) - 1) / 2) * width for j in range(len(BUCKETS))], means, width,
               yerr=sds, label=name, capsize=2)
    ax.set_xticks(range(len(BUCKETS)), [f"base pass rate {b}\n(n={sizes[b]})" for b in BUCKETS])
    ax.set_ylabel("pass@1 (%)")
    ax.set_title("pass@1 per bucket of the base's pass rate (easy + hard test problems)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
