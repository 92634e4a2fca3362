"""F9: a format-only (surrogate) reward gives early gains comparable to the correctness reward;
format + length can match it (Xin et al. 2025)."""

from __future__ import annotations

import json
import re
import statistics
import time

from experiments.findings.common import (
    PARTS,
    Ctx,
    Result,
    default_start,
    eval_json,
    fmt,
    init_from,
    mean,
    plot_path,
    pyplot,
    run_all,
    series,
    stage,
    start,
    train_tree,
    tree_of,
)

ID = "F9"
TITLE = "Format-only (surrogate) reward vs correctness reward on a base that answers in a broken format"
SHORT = "Format-only reward gains like correctness reward early (Surrogate Signals, Xin et al.)"
PAPER = ("Xin, Liu, Wang, Zhang, Sui, Hu, Wang 2025, \"Surrogate Signals from Format and Length: Reinforcement "
         "Learning for Solving Mathematical Problems without Ground Truth Answers\", arXiv:2505.19439")
CLAIM = ("A reward for the answer's format alone gives GRPO gains comparable to the ground-truth correctness "
         "reward early in training (the base already knows how, it lacks answering habits); adding a length "
         "reward closes more of the gap.")
FORMAT = r"[^#]*#-?\d+"  # fullmatch: a trace without '#', then '#' and the number, nothing after it
BAND = (12, 24)  # completion characters (= tokens) of a 2-digit scratchpad solution: "8+7=15;5+6+1=12;#125" is 19
ARMS = {
    "correct": [{"name": "correct", "weight": 1.0}],
    "format": [{"name": "correct", "weight": 0.0},
               {"name": "format", "verifier": "regex", "params": {"pattern": FORMAT, "fullmatch": True}}],
    "format_length": [{"name": "correct", "weight": 0.0},
                      {"name": "format", "verifier": "regex", "params": {"pattern": FORMAT, "fullmatch": True}},
                      {"name": "length", "verifier": "regex", "weight": 0.5,
                       "params": {"pattern": "." + "{%d,%d}" % BAND, "fullmatch": True}}],
}
STEPS, PROMPTS = 30, 16
EARLY = (5, 10)  # steps 6-10: "early in training"
SETUP = f"""
- **Task**: 2-digit addition with the scratchpad (the default testbed), exact-match verifier; 100 held-out problems.
- **Base** (shared start `misformat`, seed 0): the default start's base (micro, 600 steps on noisy demos)
  pretrained 120 more steps × 64 (lr 2e-3) on `misformat` demos (`experiments/findings/parts.py`): each demo's
  answer format is broken with probability 0.7 (the `#` marker dropped, or 1-2 junk characters after the answer,
  half each), and one answer digit corrupted with probability 0.2 (as the `noisy` source). The base's digits
  are mostly right, but most sampled answers score 0 under the exact verifier.
- **Arms** (GRPO, ppo_clip, token-mean, {STEPS} steps × {PROMPTS} prompts × group 8, lr 2e-4, from the base):
  (a) `correct`: the exact-match reward; (b) `format`: a `regex` component only, 1 iff the completion is a trace,
  `#` and a number with nothing after (`{FORMAT}`, fullmatch), the correctness component kept at weight 0 to log
  it; (c) `format_length`: (b) + 0.5 × a length band (a `regex` fullmatch of {BAND[0]}-{BAND[1]} characters, the
  length of a clean solution).
- **Measured**: the exact-match accuracy of the training rollouts (128 per step, logged in every arm by a
  zero-weight `correct` component), early = its mean over steps {EARLY[0] + 1}-{EARLY[1]}; at the end, held-out
  pass@1 (8 samples per problem at temperature 1) and format compliance (share of samples whose answer format is
  exact). Seeds vary the RL runs (the base is shared).
- **Differs from the paper**: a 1.8M-parameter char model and a synthetic task instead of a 7B model on math
  benchmarks; the format here is the answer marker, not a `\\boxed{{}}`/think template; the paper's length reward
  is a schedule we did not retrieve, here a fixed band; {STEPS} steps instead of hundreds.
"""
READING = """
- The format-only reward teaches the format fully (exact answer format 27.6 % of the base's samples -> 99.4 %),
  and for the first 4-5 steps exact accuracy follows the correctness arm (rollouts, mean of 3 seeds: 24, 33, 37,
  46, 53 % vs 24, 35, 47, 58, 70 %); then it falls back (38 % over steps 6-10, 12 % at step 30) while the
  correctness reward goes on to 93 % held-out pass@1. Held-out pass@1 ends at 10.8 ± 5.9 %, below the base's 21 %.
- Why it decays: once nearly every sample is well formatted, the format reward is the same for most of a group,
  and the groups that still differ reinforce whatever digits their well-formatted samples carry; nothing holds
  the arithmetic, and errors such as `9+7=18` spread. The paper's 7B base brings a strong latent ability that this
  base lacks in sampling (its greedy answer is right 98 % of the time, its samples' digits only 73 %).
- The length band slows the decay (19.0 ± 4.5 % final) but closes only about a tenth of the gap to the
  correctness reward: "format + length can match it" is not seen here.
- The rule's early window (steps 6-10) was fixed before the run; the format arm's early tracking lasts about 5
  steps on this testbed, so the verdict says not reproduced although the first steps look like the paper's.
"""
BUDGET = "≈ 44 min wall for 3 seeds on the shared 2-core machine, four other findings running (base ≈ 10 min)"


def base_tree(ctx: Ctx) -> dict:
    """The default base, pretrained further on misformatted demos (cheaper than a base from scratch)."""
    tree = init_from(tree_of("default"), default_start(ctx) / "models" / "base")
    tree["imports"] = [str(PARTS)]
    tree["data"].update(test_size=100, ood_size=10)
    tree["eval"] = {"n_samples": 8, "ks": [1, 8], "splits": ["test"]}
    base = stage(tree, "base")
    base.update(steps=120, lr=0.002, warmup_steps=10,
                demos={"name": "misformat", "params": {"p": 0.7, "corrupt_prob": 0.2}})
    tree["stages"] = [base]
    return tree


def rl_tree(ctx: Ctx, base_model, arm: str) -> dict:
    tree = init_from(base_tree(ctx), base_model)
    rl = stage(tree_of("default"), "rl")
    rl.update(steps=ctx.steps(STEPS), batch_size=ctx.size(PROMPTS), lr=0.0002)
    tree["stages"] = [rl]
    tree["reward"] = {"components": [{**c, "isolation": "inline"} for c in ARMS[arm]], "primary": "correct"}
    return tree


def run(ctx: Ctx) -> Result:
    base_run = start(ctx, "misformat", base_tree(ctx))
    base = {**eval_json(base_run, "base"), "format": _format_frac(base_run, "base")}
    where = ctx.dir(ID)

    def one(arm: str, seed: int) -> dict:
        t0 = time.perf_counter()
        d = train_tree(ctx, rl_tree(ctx, base_run / "models" / "base", arm), where, f"{arm}-s{seed}", seed)
        res = eval_json(d, "rl")
        return {"arm": arm, "seed": seed, "pass@1": res["pass@1"], "pass@8": res.get("pass@8", float("nan")),
                "format": _format_frac(d), "train_correct": series(d, "reward/correct/mean", "rl"),
                "wall_s": time.perf_counter() - t0}

    seeds = ctx.seeds[:1] if ctx.quick else ctx.seeds  # quick: one seed (the 20 s budget)
    rows = run_all(where / "results.jsonl", "arm", list(ARMS), seeds, one)
    return _result(ctx, base, rows)


def _format_frac(run, stage_name: str = "rl") -> float:
    """Share of the final evaluation's samples whose answer format is exact (the regex of arm b)."""
    rx = re.compile(FORMAT, re.S)
    recs = [json.loads(x) for x in (run / "eval" / f"{stage_name}_test.jsonl").read_text().splitlines()]
    return mean([bool(rx.fullmatch(s["text"])) for r in recs for s in r["samples"]])


def _by_arm(rows: list[dict]) -> dict[str, list[dict]]:
    return {a: [r for r in rows if r["arm"] == a] for a in ARMS}


def _early(rs: list[dict]) -> list[float]:
    """Mean exact-match accuracy of the training rollouts over the EARLY steps, per run."""
    return [mean(r["train_correct"][EARLY[0]:EARLY[1]]) for r in rs]


def _result(ctx: Ctx, base: dict, rows: list[dict]) -> Result:
    by = _by_arm(rows)
    b = base["pass@1"]
    lines = [f"| arm | rollout accuracy, steps {EARLY[0] + 1}-{EARLY[1]} | final pass@1 | final pass@8 | "
             "format-exact samples |",
             "|---|---|---|---|---|",
             f"| base (no RL) | - | {fmt([b])} | {fmt([base.get('pass@8', float('nan'))])} | {fmt([base['format']])} |"]
    for a, rs in by.items():
        early = fmt(_early(rs))
        lines.append(f"| {a} | {early} | {fmt([r['pass@1'] for r in rs])} | {fmt([r['pass@8'] for r in rs])} | "
                     f"{fmt([r['format'] for r in rs])} |")
    ga, gb, gc = (mean(_early(by[a])) - b for a in ARMS)
    fa, fb, fc = (mean([r["pass@1"] for r in by[a]]) - b for a in ARMS)
    early_ok = ga > 0 and gb >= 0.5 * ga
    closes = fc - fb >= 0.25 * (fa - fb) if fa - fb > 0.02 else fc >= fa - 0.02  # no gap: (c) must match (a)
    spread = max(_sd([r["pass@1"] for r in by["correct"]]), _sd([r["pass@1"] for r in by["format"]]))
    if not ga > spread:  # NaN (no early steps) too
        verdict = "inconclusive"
    elif early_ok and closes:
        verdict = "reproduced"
    elif early_ok or closes:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    reason = (f"rule: reproduced if the format-only arm's early accuracy gain over the base (training rollouts, "
              f"steps {EARLY[0] + 1}-{EARLY[1]}) is at least half the correctness arm's (here {100 * gb:+.1f} vs "
              f"{100 * ga:+.1f} pt) and format + length closes at least a quarter of the final gap between "
              f"format-only and correctness, or ends within 2 pt of correctness when there is no gap (final "
              f"gains: correct {100 * fa:+.1f}, format {100 * fb:+.1f}, format+length {100 * fc:+.1f} pt); partly "
              f"if one holds; inconclusive if the correctness arm's early gain is not above the seed spread.")
    headline = (f"pass@1 {100 * b:.0f}% base -> correct {100 * (b + fa):.0f}%, format-only {100 * (b + fb):.0f}%, "
                f"format+length {100 * (b + fc):.0f}% after {STEPS} steps")
    return Result(verdict, reason, headline, "\n".join(lines), _plot(ctx, base, by))


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _plot(ctx: Ctx, base: dict, by: dict[str, list[dict]]):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for a, rs in by.items():
        axes[0].bar(a, 100 * mean([r["pass@1"] for r in rs]), yerr=100 * _sd([r["pass@1"] for r in rs]), alpha=0.7)
        m = min(len(r["train_correct"]) for r in rs)
        axes[1].plot(range(1, m + 1), [100 * mean([r["train_correct"][i] for r in rs]) for i in range(m)], label=a)
    axes[0].axhline(100 * base["pass@1"], color="gray", ls="--", label="base")
    axes[0].set(ylabel="held-out pass@1 (%)", title=f"after {STEPS} steps (exact verifier)")
    axes[1].axhline(100 * base["pass@1"], color="gray", ls="--", label="base (held-out)")
    axes[1].set(xlabel="RL step", ylabel="% of rollouts correct", title="training rollouts (exact verifier)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
