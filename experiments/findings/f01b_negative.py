"""F1b: learning from negative samples alone (NSR) keeps pass@k at large k; positive-only (PSR)
sharpens and loses it; W-REINFORCE (down-weighted positives) gets both."""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments.findings import f01_boundary as f1
from experiments.findings.common import Ctx, Result, default_start, fmt, mean, plot_path, pyplot, run_all

ID = "F1b"
TITLE = "Negative samples alone (NSR) keep pass@k at large k; positive-only reinforcement narrows it"
SHORT = "NSR / W-REINFORCE keep large-k pass@k, PSR loses it (Zhu et al.)"
PAPER = ('Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning", '
         'arXiv:2506.01347')
CLAIM = ("Training only on negative samples (NSR: push down wrong answers) keeps or improves pass@k across the "
         "whole range of k, while training only on positive samples (PSR) raises pass@1 but loses pass@k at "
         "large k; W-REINFORCE (positives weighted 0.1) gets the best of both.")
SETUP = """The F1 setting: the default start's SFT model, then the `psr`, `nsr` and `w_reinforce`
recipes' RL stage (the default GRPO stage's budget: 40 steps x 32 prompts x 8 samples, lr 2e-4,
plain policy gradient with the recipe's advantage: +1 on correct samples only, -1 on wrong samples
only, and correct samples weighted 0.1). GRPO, the base and SFT are F1's runs and evaluations
(n = 256 samples). The three new arms draw n = 64 samples on the same 64 ID and 64 OOD problems;
pass@k (unbiased estimator, k <= 64) is then comparable across arms. Three seeds per RL arm."""
READING = """- **No arm keeps the base's OOD coverage.** The base solves 0.9 % of the 3-digit problems within
  64 samples; GRPO, PSR, NSR and W-REINFORCE all end at 0.0 % at every k in all three seeds. The
  paper's central point, that NSR preserves pass@k at large k, does not show on this split.
- **ID is at the ceiling.** PSR and NSR reach 100 % from k = 16, GRPO 99.2 ± 0.8 % and W-REINFORCE
  99.5 ± 0.9 % at k = 64 (one seed of each keeps missing one problem); every difference at large k
  is within the seed spread. At k = 1 PSR (98.8 ± 0.6 %) and NSR (98.4 ± 0.3 %) are a little above
  GRPO (97.3 ± 1.1 %).
- The testbed is too easy in distribution and too hard out of it for this claim: a split where the
  base solves a sizable share at large k but not at k = 1 would be needed."""
BUDGET = "≈ 15 min for 3 seeds on 2 cores after F1 (nine RL runs and evaluations of 8k samples)"
ARMS = ("psr", "nsr", "w_reinforce")
LABELS = {"base": "base", "sft": "SFT", "rl": "GRPO", "psr": "PSR", "nsr": "NSR", "w_reinforce": "W-REINFORCE"}


def evaluations(ctx: Ctx) -> dict[str, list[dict]]:
    ev = f1.evaluations(ctx, ctx.samples(256))
    start, n = default_start(ctx), ctx.samples(64)
    for arm in ARMS:
        runs = f1.rl_runs(ctx, start, arm, "F1b")
        ev[arm] = run_all(ctx.dir("F1b", f"evals_n{n}.jsonl"), "model", [arm], ctx.seeds,
                          lambda m, s, runs=runs: {"model": m, "seed": s,
                                                   **f1.passk_row(ctx, runs[s] / "models" / "rl", s, n)})
    return ev


def table(ev: dict[str, list[dict]], ks: list[int]) -> str:
    lines = ["| split | model | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    for split in f1.SPLITS:
        for m in LABELS:
            lines.append(f"| {split} | {LABELS[m]} | " + " | ".join(fmt(f1.curve(ev[m], split, k)) for k in ks) + " |")
    return "\n".join(lines)


def plot(ctx: Ctx, ev: dict[str, list[dict]], ks: list[int]) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, split in zip(axes, f1.SPLITS):
        for m in LABELS:
            ax.plot(ks, [100 * mean(f1.curve(ev[m], split, k)) for k in ks], "o-" if m in ARMS else "--",
                    label=LABELS[m], ms=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.set_title({"test": "ID: 2-digit addition", "ood": "OOD: 3-digit addition"}[split])
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def verdict(ev: dict[str, list[dict]], big: int) -> tuple[str, str]:
    """At the largest k, per split: NSR vs PSR and W-REINFORCE vs GRPO (means over seeds). A pair
    with both sides at the ceiling (>= 99.5 %) or the floor (<= 0.5 %) says nothing and is left
    out; a difference smaller than the larger of the two seed spreads is noise."""
    checks, noise = [], []
    for split in f1.SPLITS:
        for a, b in (("nsr", "psr"), ("w_reinforce", "rl")):
            va, vb = f1.curve(ev[a], split, big), f1.curve(ev[b], split, big)
            if min(mean(va), mean(vb)) >= 0.995 or max(mean(va), mean(vb)) <= 0.005:
                continue
            name = f"{split}: {LABELS[a]} {fmt(va)} vs {LABELS[b]} {fmt(vb)}"
            if abs(mean(va) - mean(vb)) < max(spread(va), spread(vb)):
                noise.append(name)
            else:
                checks.append((name, mean(va) > mean(vb)))
    held = sum(ok for _, ok in checks)
    v = ("inconclusive" if not checks else "reproduced" if held == len(checks) else "partly" if held
         else "not reproduced")
    return v, (f"Rule: at k={big} on both splits, NSR above PSR and W-REINFORCE above GRPO (means over seeds); "
               "pairs both at the ceiling or the floor left out, differences within the seed spread called noise. "
               + "; ".join([f"{c}: {'yes' if ok else 'no'}" for c, ok in checks]
                           + [f"within noise: {c}" for c in noise]) + ".")


def spread(vals: list[float]) -> float:
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


def run(ctx: Ctx) -> Result:
    ev = evaluations(ctx)
    ks = [k for k in (1, 4, 16, 64) if k <= ctx.samples(64)]
    v, why = verdict(ev, ks[-1])
    big = ks[-1]
    arms = ("base", "rl", "psr", "nsr", "w_reinforce")
    headline = "; ".join(f"{split} pass@{big}: " + ", ".join(f"{LABELS[m]} {fmt(f1.curve(ev[m], split, big))}"
                                                          for m in arms) for split in f1.SPLITS) + " %"
    return Result(v, why, headline, table(ev, ks), plot(ctx, ev, ks))
