"""F8: LIMR's learning-impact selection (a small subset of the prompts) against the full data
and a random subset of the same size, at an equal RL budget."""

from __future__ import annotations

import math
import statistics

from experiments.findings.common import (
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
    train_tree,
    tree_of,
)
from rftkit.data.curriculum_base import SAMPLERS
from rftkit.data.selection import LIMRSampler

ID = "F8"
TITLE = "Less is more: a LIM-selected subset matches full-data RL and beats a random subset"
SHORT = "A LIM-selected ~16% subset matches full-data RL, beats random (LIMR)"
PAPER = ("Li, Zou, Liu 2025, \"LIMR: Less is More for RL Scaling\", arXiv:2502.11886")
CLAIM = ("Training RL on the ~16% of prompts whose accuracy trajectory follows the model's average learning "
         "curve (learning impact measurement) matches training on all prompts and beats a random subset of "
         "the same size.")
POOL = 128
KEEP = 0.16
WARMUP_EPOCHS = 2
STEPS, BATCH = 40, 16
ARMS = ["full", "limr", "random"]
SETUP = f"""
- Task and model: the default testbed (2-digit addition with a scratchpad, micro char-level GPT).
- Start: the default start's **base** model (`default_start(ctx)/models/base`: noisy demos, pass@1 ≈ 35 %),
  not its SFT model, whose pass@1 of ≈ 89 % leaves RL almost nothing to gain; LIMR too runs RL from a base
  model (Qwen2.5-Math-7B). Trained once (seed 0); the seeds vary the RL runs and their train and test draws.
- Data: a pool of {POOL} training prompts (`data.train_size`), held-out test of 100 problems.
- Arms (GRPO as `grpo.yaml`: k3 KL 0.01; {STEPS} steps x {BATCH} prompts x 8 samples, lr 2e-4, the same
  for all): **full**: uniform passes over the {POOL} prompts; **limr**: rftkit's `limr` sampler:
  {WARMUP_EPOCHS} uniform warm-up epochs over the pool ({WARMUP_EPOCHS * POOL // BATCH} steps) record each
  prompt's accuracy per epoch, then the top {KEEP:.0%} by LIM score ({math.ceil(KEEP * POOL)} prompts) are
  the only prompts for the remaining steps; **random**: the same warm-up, then {math.ceil(KEEP * POOL)}
  prompts drawn at random (a `limr_random` sampler defined in this finding's module).
- How this differs from the paper: LIMR scores MATH's 8,523 problems from a finished full-data run and
  retrains from the base on the 1,389 selected; the `limr` sampler does warm-up and selection inside one
  run, so the three arms share the first {WARMUP_EPOCHS * POOL // BATCH} steps (the same uniform draws:
  those steps are identical) and differ only in the last {STEPS - WARMUP_EPOCHS * POOL // BATCH}. The full
  arm keeps drawing from the whole pool; the subset arms revisit ~21 prompts ~18 times each.
- Measured: held-out pass@1 (16 samples at temperature 1) and greedy accuracy after RL; the training
  reward per step.
"""
BUDGET = "≈ 8 CPU-min for 3 seeds (9 RL runs of 40 steps)"
READING = """
- The gain comes before any selection: training accuracy reaches ~94 % (mean of seeds) within the 16 shared warm-up
  steps (from 35-40 %), so the last 24 steps only keep or lose it. Full data keeps held-out pass@1 at 97.4 ± 0.2 %; both
  21-prompt subsets lose a few points (LIM 93.9 ± 1.4, random 92.8 ± 4.1; greedy 96.3 and 95.0 vs 99.3):
  revisiting 21 prompts ~18 times narrows what the policy is trained on.
- LIM vs random: +1.1 ± 2.6 pts, ahead in 2 of 3 seeds (seed 1: random 97.4 vs LIM 95.6): within the noise.
- Caveat: what RL learns on this testbed is one global habit (stop corrupting the answer), learnt from any
  prompts, and all prompts follow nearly the same learning curve (mean LIM score of the kept prompts 0.94):
  LIMR's premise, prompts whose learning curves differ, is weak here. The one-run sampler also gives the
  subsets only the steps after the warm-up; LIMR retrains from the base on the subset for the whole budget.
"""


@SAMPLERS.register("limr_random")
class RandomSubsetSampler(LIMRSampler):
    """LIMR's control: the same warm-up, then a uniformly random subset of the size LIMR keeps."""

    name = "limr_random"

    def _select(self, idx: list[int], acc) -> tuple[list[int], list[float]]:
        if not idx:
            return [], []
        k = math.ceil(self.keep_fraction * len(idx))
        return sorted(int(idx[j]) for j in self.rng.choice(len(idx), size=k, replace=False)), []


def arm_tree(ctx: Ctx, arm: str) -> dict:
    tree = tree_of("grpo")
    rl = stage(tree, "rl")
    rl.update(steps=ctx.steps(STEPS), batch_size=BATCH, lr=0.0002)
    knobs = {"warmup_epochs": WARMUP_EPOCHS, "keep_fraction": KEEP}
    rl["sampler"] = {"name": "uniform"} if arm == "full" else \
        {"name": "limr" if arm == "limr" else "limr_random", "params": knobs}
    tree["stages"] = [rl]
    tree["data"].update(train_size=ctx.size(POOL), test_size=ctx.size(100))
    tree["eval"] = {"n_samples": ctx.samples(16), "ks": [1, 16], "splits": ["test"]}
    return init_from(tree, default_start(ctx) / "models" / "base")


def run_arm(ctx: Ctx, arm: str, seed: int) -> dict:
    run = train_tree(ctx, arm_tree(ctx, arm), ctx.dir(ID), f"{arm}-s{seed}", seed=seed)
    res = eval_json(run, "rl")
    sel = series(run, "curriculum/selected", "rl")
    return {"arm": arm, "seed": seed, "pass@1": res["pass@1"], "greedy": res["greedy_acc"],
            "pass@16": res.get("pass@16", float("nan")), "selected": sel[-1] if sel else float("nan"),
            "reward": series(run, "reward/mean", "rl")}


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def verdict(rows: list[dict]) -> tuple[str, str, str]:
    by = {(r["arm"], r["seed"]): r["pass@1"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    d_full = [by["limr", s] - by["full", s] for s in seeds]
    d_rand = [by["limr", s] - by["random", s] for s in seeds]
    matches = mean(d_full) >= -max(0.02, sd(d_full))
    beats = mean(d_rand) > max(0.0, sd(d_rand)) and all(d > 0 for d in d_rand)
    verdict = "reproduced" if matches and beats else "partly" if matches or beats else "not reproduced"
    reason = (f"rule: limr matches full if its mean pass@1 gap to full is above -max(2 pts, std of the gap) "
              f"(gap {100 * mean(d_full):+.1f} ± {100 * sd(d_full):.1f} pts: {'yes' if matches else 'no'}); "
              f"limr beats random if it is higher in every seed and the mean gap exceeds its std "
              f"(gap {100 * mean(d_rand):+.1f} ± {100 * sd(d_rand):.1f} pts: {'yes' if beats else 'no'}); "
              "both: reproduced, one: partly, neither: not reproduced.")
    arm = {a: mean([by[a, s] for s in seeds]) for a in ARMS}
    head = (f"pass@1 full {100 * arm['full']:.1f}, LIM subset {100 * arm['limr']:.1f}, "
            f"random subset {100 * arm['random']:.1f} %")
    return verdict, reason, head


def table(rows: list[dict], start: dict) -> str:
    lines = ["| arm | prompts trained on after warm-up | held-out pass@1 (%) | greedy (%) | pass@16 (%) |",
             "|---|---|---|---|---|",
             f"| start (default base, no RL) | - | {100 * start['pass@1']:.1f} | {100 * start['greedy_acc']:.1f} | "
             f"{fmt([start.get('pass@16', float('nan'))])} |"]
    for arm in ARMS:
        rs = [r for r in rows if r["arm"] == arm]
        sel = mean([r["selected"] for r in rs])
        n = "all" if arm == "full" else "-" if sel != sel else f"{sel:.0f}"
        lines.append(f"| {arm} | {n} | {fmt([r['pass@1'] for r in rs])} | {fmt([r['greedy'] for r in rs])} | "
                     f"{fmt([r['pass@16'] for r in rs])} |")
    return "\n".join(lines)


def plot(ctx: Ctx, rows: list[dict]):
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, arm in enumerate(ARMS):
        rs = [r for r in rows if r["arm"] == arm]
        ys = [100 * r["pass@1"] for r in rs]
        ax.bar(i, mean(ys), alpha=0.35, color=f"C{i}")
        ax.scatter([i] * len(ys), ys, color=f"C{i}", s=18)
        curves = [r["reward"] for r in rs if r["reward"]]
        if curves:
            n = min(map(len, curves))
            bx.plot(range(1, n + 1), [mean([c[t] for c in curves]) for t in range(n)], label=arm, color=f"C{i}")
    ax.set_xticks(range(len(ARMS)), ARMS)
    ax.set_ylabel("held-out pass@1 (%)")
    ax.set_title("after RL (bars: mean; dots: seeds)")
    bx.axvline(WARMUP_EPOCHS * POOL / BATCH, color="grey", ls=":", lw=1)
    bx.set_xlabel("RL step (dotted: end of the warm-up)")
    bx.set_ylabel("training reward (mean over seeds)")
    bx.legend()
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(ctx: Ctx) -> Result:
    start = default_start(ctx)
    rows = run_all(ctx.dir(ID, "results.jsonl"), "arm", ARMS, ctx.seeds, lambda a, s: run_arm(ctx, a, s))
    v, reason, head = verdict(rows)
    return Result(v, reason, head, table(rows, eval_json(start, "base")), plot(ctx, rows))
