"""F10: echo chamber: RL collapses onto one of the output styles seen in pretraining; which one
may depend on scale; RL on easy problems transfers to harder ones (Zhao et al. 2025)."""

from __future__ import annotations

import json
import statistics
import time

from experiments.findings.common import (
    Ctx,
    Result,
    eval_json,
    fmt,
    init_from,
    mean,
    plot_path,
    pyplot,
    run_all,
    series,
    start,
    train_tree,
    tree_of,
)

ID = "F10"
TITLE = "Echo chamber: RL on a base pretrained on two answer styles collapses onto one of them"
SHORT = "RL collapses onto one pretraining output style (Echo Chamber, Zhao et al.)"
PAPER = ("Zhao, Meterez, Kakade, Pehlevan, Jelassi, Malach 2025, \"Echo Chamber: RL Post-training Amplifies "
         "Behaviors Learned in Pretraining\", arXiv:2504.07912")
CLAIM = ("PPO, GRPO and expert iteration converge to one dominant output distribution, amplifying a pattern of "
         "the pretraining mixture; models of different scale trained on the same mixture can converge to different "
         "ones; RL on easy questions improves harder ones.")
SIZES = ["nano", "micro"]
ALGOS = ["grpo", "ei"]
STYLE = ";"  # a scratchpad completion has ';'-ended steps; a direct one is just '#<answer>'
STEPS, PROMPTS, BASE_STEPS = 40, 16, 300
SETUP = f"""
- **Task**: 2-digit addition, the same prompts (`add:58+67=`) in two `data.tasks` entries: `pad` (demos with the
  scratchpad, `8+7=15;5+6+1=12;#125`) and `direct` (demos `#125`), so the prompt never says which style to use.
  Held-out: 64 2-digit problems (test) and 64 3-digit problems (OOD, never trained on).
- **Bases** (two shared starts, seed 0): the `nano` (0.45M parameters) and `micro` (1.8M) models pretrained from
  scratch {BASE_STEPS} steps × 64 on the mixture (half the prompts per style), noisy demos (answer corrupted with
  probability 0.5), so each base samples both styles and is partly right in each.
- **Arms** per size: GRPO (ppo_clip, token-mean) and expert iteration (the `raft` mechanism: SFT on one
  verified-correct sample per prompt), {STEPS} steps × {PROMPTS} prompts × group 8, lr 2e-4, exact-match reward on
  2-digit problems only. A zero-weight `regex` reward component (`{STYLE}`, search) marks scratchpad completions,
  so `reward/style/mean` logs the scratchpad share of the training rollouts at every step.
- **Measured**: scratchpad share of the held-out samples (8 per problem, temperature 1) and pass@1 on 2-digit
  (test) and 3-digit (OOD) problems, before (the base) and after RL. Collapse: share > 90 % or < 10 %. Seeds vary
  the RL runs (the bases are shared).
- **Differs from the paper**: two tiny char models on one synthetic task (the paper: 150M and 1B OLMo models
  pretrained on math corpora mixed with code and natural-language solution styles, GSM8K); two styles, not three;
  {STEPS} RL steps, not thousands; no PPO arm. The paper's harder questions come from its pretraining
  distribution; here 3-digit sums were never seen in pretraining (each base solves none of them), a harder
  test of easy->hard transfer.
"""
READING = """
- micro collapses: both GRPO and expert iteration take the scratchpad share of held-out samples from 52 % to
  99 % (99.1 ± 0.7 and 99.0 ± 0.7) within 40 steps, and 2-digit pass@1 doubles (10.3 % -> 23.9 / 22.5 %). The
  winner is the style the base was better at (its scratchpad samples were right 17 % of the time, direct 3 %).
- nano drifts the same way without collapsing in 40 steps: GRPO 50 % -> 84.3 ± 6.7 %, expert iteration to
  62.5 ± 27.8 % (one seed moved to the direct style, 32 %, two to the scratchpad, 86 and 69 %). With 3.6 % pass@1
  the nano base gives few correct samples, so its RL signal is sparse and noisy, and its pass@1 does not rise.
- No scale-dependent winner here: both sizes favour the scratchpad; the smaller model is only slower and more
  seed-dependent.
- No easy->hard transfer: 3-digit pass@1 stays 0 in every cell. The 3-digit style share follows the 2-digit one
  (the collapse carries over) but the bases never saw a 3-digit sum, so there is no latent ability to amplify;
  the paper's harder questions were in its pretraining data.
"""
BUDGET = "≈ 59 min wall for 3 seeds on the shared 2-core machine, other findings running (two bases ≈ 25 min)"


def echo_tree(size: str) -> dict:
    tree = tree_of("default")
    tree["model"] = {**tree.get("model", {}), "size": size}
    task = {"name": "arithmetic", "difficulty": [2, 2], "ood_difficulty": [3, 3]}
    tree["data"] = {"tasks": [{**task, "label": "pad", "params": {"op": "add", "scratchpad": True}},
                              {**task, "label": "direct", "params": {"op": "add", "scratchpad": False}}],
                    "train_size": 20000, "test_size": 64, "ood_size": 64}
    tree["eval"] = {"n_samples": 8, "ks": [1, 8], "splits": ["test", "ood"]}
    tree["reward"] = {"components": [{"name": "correct", "isolation": "inline"},
                                     {"name": "style", "verifier": "regex", "weight": 0.0, "isolation": "inline",
                                      "params": {"pattern": STYLE}}], "primary": "correct"}
    return tree


def base_tree(size: str) -> dict:
    tree = echo_tree(size)
    base = next(s for s in tree["stages"] if s["name"] == "base")
    base.update(steps=BASE_STEPS, demos={"name": "noisy", "params": {"corrupt_prob": 0.5}})
    tree["stages"] = [base]
    tree.pop("reward")  # pretraining scores nothing
    return tree


def rl_tree(ctx: Ctx, size: str, model, algo: str) -> dict:
    tree = init_from(echo_tree(size), model)
    rl = next(s for s in tree_of("default")["stages"] if s["name"] == "rl")
    rl.update(steps=ctx.steps(STEPS), batch_size=ctx.size(PROMPTS), lr=0.0002)
    if algo == "ei":  # expert iteration as raft.yaml: SFT on the verified-correct samples, no policy gradient
        rl.update(demos={"name": "self_correct", "params": {"per_prompt": 1}}, objectives=[{"name": "sft"}])
    tree["stages"] = [rl]
    return tree


def style_share(run, stage_name: str, split: str) -> float:
    """Share of a final evaluation's samples written in the scratchpad style."""
    recs = [json.loads(x) for x in (run / "eval" / f"{stage_name}_{split}.jsonl").read_text().splitlines()]
    return mean([STYLE in s["text"] for r in recs for s in r["samples"]])


def _summary(run, stage_name: str) -> dict:
    return {"test": eval_json(run, stage_name, "test")["pass@1"], "ood": eval_json(run, stage_name, "ood")["pass@1"],
            "share": style_share(run, stage_name, "test"), "share_ood": style_share(run, stage_name, "ood")}


def run(ctx: Ctx) -> Result:
    bases = {size: start(ctx, f"echo_{size}", base_tree(size)) for size in SIZES}
    base = {size: _summary(d, "base") for size, d in bases.items()}
    where = ctx.dir(ID)

    def one(arm: str, seed: int) -> dict:
        size, algo = arm.split("/")
        t0 = time.perf_counter()
        d = train_tree(ctx, rl_tree(ctx, size, bases[size] / "models" / "base", algo), where,
                       f"{size}-{algo}-s{seed}", seed)
        return {"arm": arm, "seed": seed, **_summary(d, "rl"), "curve": series(d, "reward/style/mean", "rl"),
                "train_acc": series(d, "reward/correct/mean", "rl"), "wall_s": time.perf_counter() - t0}

    arms = [f"{s}/{a}" for s in SIZES for a in ALGOS]
    seeds = ctx.seeds[:1] if ctx.quick else ctx.seeds  # quick: one seed (the 20 s budget)
    rows = run_all(where / "results.jsonl", "arm", arms, seeds, one)
    return _result(ctx, base, rows, arms)


def _sd(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _result(ctx: Ctx, base: dict, rows: list[dict], arms: list[str]) -> Result:
    by = {a: [r for r in rows if r["arm"] == a] for a in arms}
    lines = ["| size / algorithm | scratchpad share (test) | share (3-digit OOD) | pass@1 2-digit | pass@1 3-digit |",
             "|---|---|---|---|---|"]
    for size, b in base.items():
        lines.append(f"| {size} base (no RL) | {fmt([b['share']])} | {fmt([b['share_ood']])} | {fmt([b['test']])} | "
                     f"{fmt([b['ood']])} |")
    for a, rs in by.items():
        lines.append(f"| {a} | {fmt([r['share'] for r in rs])} | {fmt([r['share_ood'] for r in rs])} | "
                     f"{fmt([r['test'] for r in rs])} | {fmt([r['ood'] for r in rs])} |")
    share = {a: mean([r["share"] for r in rs]) for a, rs in by.items()}
    collapsed = [a for a, s in share.items() if s > 0.9 or s < 0.1]
    moved = mean([abs(share[a] - base[a.split("/")[0]]["share"]) for a in by])
    spread = mean([_sd([r["share"] for r in rs]) for rs in by.values()])
    # a transfer gain must exceed 1 pt and the seed spread (one lucky 3-digit sample is not transfer)
    transfer = [a for a, rs in by.items() if mean([r["ood"] for r in rs]) - base[a.split("/")[0]]["ood"]
                > max(0.01, _sd([r["ood"] for r in rs]))]
    winner = {s: "scratchpad" if mean([share[a] for a in by if a.startswith(s)]) >= 0.5 else "direct" for s in base}
    if moved <= spread:
        verdict = "inconclusive"
    elif len(collapsed) == len(by) and len(transfer) == len(by):
        verdict = "reproduced"
    elif collapsed or transfer:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    reason = (f"rule: reproduced if every (size, algorithm) cell collapses (held-out scratchpad share > 90 % or "
              f"< 10 %, mean over seeds) and raises 3-digit pass@1 above its base by > 1 pt and the seed spread "
              f"(easy->hard transfer); partly "
              f"if some cells do either; inconclusive if the share moves less than its seed spread. Collapsed: "
              f"{len(collapsed)}/{len(by)} cells; transfer: {len(transfer)}/{len(by)}; the dominant style is "
              + ", ".join(f"{w} for {s}" for s, w in winner.items()) + ".")
    headline = ("scratchpad share " + ", ".join(f"{s} {100 * base[s]['share']:.0f}%->"
                                                 + "/".join(f"{100 * share[f'{s}/{g}']:.0f}" for g in ALGOS)
                                                 for s in base) + "% (GRPO/EI); "
                f"OOD gains in {len(transfer)}/{len(by)} cells")
    return Result(verdict, reason, headline, "\n".join(lines), _plot(ctx, base, by))


def _plot(ctx: Ctx, base: dict, by: dict[str, list[dict]]):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, size in enumerate(base):
        ax = axes[i]
        for a, rs in by.items():
            if not a.startswith(size):
                continue
            m = min(len(r["curve"]) for r in rs)
            ax.plot(range(m + 1), [100 * base[size]["share"]] + [100 * mean([r["curve"][j] for r in rs])
                                                                 for j in range(m)], label=a.split("/")[1])
        ax.axhspan(90, 100, color="gray", alpha=0.15)
        ax.axhspan(0, 10, color="gray", alpha=0.15)
        ax.set(xlabel="RL step", ylabel="scratchpad share of rollouts (%)", title=f"{size}", ylim=(-2, 102))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
