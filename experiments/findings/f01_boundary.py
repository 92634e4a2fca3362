"""F1: does RL expand what the base model can solve, or sharpen what it already samples?"""

from __future__ import annotations

from pathlib import Path

from experiments.findings.common import (
    Ctx,
    Result,
    default_start,
    evaluate_model,
    fmt,
    init_from,
    mean,
    plot_path,
    pyplot,
    run_all,
    stage,
    train_tree,
    tree_of,
)

ID = "F1"
TITLE = "RL sharpens the base model's distribution; it does not expand what the base can solve"
SHORT = "RL lifts pass@1, not pass@k at large k (Yue et al.)"
PAPER = ('Yue et al. 2025, "Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the '
         'Base Model?", arXiv:2504.13837')
CLAIM = ("RL-trained models beat their base at small k, but the base reaches comparable or higher pass@k at large "
         "k: the problems RL solves are already within the base's samples.")
SETUP = """The default testbed: the micro model (1.8M parameters) pretrained for 600 steps on noisy
demonstrations of 2-digit addition with a scratchpad (**base**, 70 % of the answers corrupted), 10
steps of SFT on clean ones (**SFT**), then the default recipe's GRPO stage (40 steps x 32 prompts x 8
samples, lr 2e-4) from the SFT model (**RL**, one run per seed). Each model draws n = 256 samples
(temperature 1) on 64 held-out 2-digit problems (**ID**) and 64 3-digit problems (**OOD**, never
trained); pass@k is the unbiased estimator for k = 1, 2, 4, ..., 256. Base and SFT are one model
each (seed 0 start, sampling seed 0): with 256 samples per problem their curves barely move between
sampling seeds; the spread shown is over the three RL runs. The paper's distillation control is not
run (see F6 for what demonstrations add where the base has no coverage)."""
READING = """- **ID**: RL lifts pass@1 from 36.1 % (base) and 90.7 % (SFT) to 97.3 ± 1.1 %, but its curve is
  flat: 99.5 ± 0.9 % at k = 256, while the base reaches 99.9 % at k = 16 and 100 % from k = 64. The
  curves cross at k = 16. Every ID problem is solved by the base at least once in 256 samples; one RL
  seed never solves one of them.
- **OOD** (3 digits, never trained): the base solves 1 of 64 problems at least once (1.6 % pass@256);
  the RL models solve none, at any k, in all three seeds. RL narrowed the boundary here.
- The testbed's base already covers every ID problem, so "problems RL solves that the base never
  does" can only be counted on OOD: zero, as the paper reports for its models."""
BUDGET = "≈ 18 min for 3 seeds on 2 cores (three RL runs, five evaluations of 33k samples)"
KS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
SPLITS = ("test", "ood")


def eval_tree(ctx: Ctx) -> dict:
    tree = tree_of("default")
    tree["data"].update(test_size=ctx.size(64), ood_size=ctx.size(64))
    return tree


def passk_row(ctx: Ctx, model_dir: Path, seed: int, n: int) -> dict:
    """Per split: the pass@k curve and each problem's (prompt, correct samples of n)."""
    res = evaluate_model(model_dir, eval_tree(ctx), n=n, ks=[1], seed=seed, splits=SPLITS)
    row = {}
    for split, (summary, records) in res.items():
        row[split] = {"curve": {str(k): summary[f"pass@{k}"] for k in KS if k <= n},
                      "solved": {r["prompt"]: r["n_correct"] for r in records}}
    return row


def rl_runs(ctx: Ctx, start: Path, recipe: str, where: str) -> dict[int, Path]:
    """The recipe's rl stage from the SFT model, one run per seed (resumable)."""
    def run(name: str, seed: int) -> dict:
        tree = init_from(tree_of(recipe), start / "models" / "sft")
        tree["stages"] = [stage(tree, "rl")]
        tree["stages"][0]["steps"] = ctx.steps(tree["stages"][0]["steps"])
        tree["data"].update(test_size=ctx.size(32), ood_size=0)
        tree["eval"] = {"n_samples": 4, "ks": [1], "splits": ["test"]}  # F1 evaluates with n=256 itself
        done = train_tree(ctx, tree, ctx.dir(where), f"{name}-s{seed}", seed)
        return {"arm": name, "seed": seed, "run": str(done.relative_to(ctx.root))}
    rows = run_all(ctx.dir(where, "runs.jsonl"), "arm", [recipe], ctx.seeds, run)
    return {r["seed"]: ctx.root / r["run"] for r in rows}


def evaluations(ctx: Ctx, n: int) -> dict[str, list[dict]]:
    """{model: [row per seed]} for base and SFT (seed 0) and RL (every seed)."""
    start = default_start(ctx)
    rl = rl_runs(ctx, start, "default", "F1")
    models = {"base": start / "models" / "base", "sft": start / "models" / "sft"}
    log = ctx.dir("F1", f"evals_n{n}.jsonl")
    out = {m: run_all(log, "model", [m], ctx.seeds[:1], lambda m, s: {"model": m, "seed": s,
                                                                       **passk_row(ctx, models[m], s, n)})
           for m in models}
    out["rl"] = run_all(log, "model", ["rl"], ctx.seeds,
                        lambda m, s: {"model": m, "seed": s, **passk_row(ctx, rl[s] / "models" / "rl", s, n)})
    return out


def curve(rows: list[dict], split: str, k: int) -> list[float]:
    return [r[split]["curve"][str(k)] for r in rows if str(k) in r[split]["curve"]]


def crossing(ev: dict[str, list[dict]], split: str, ks: list[int]) -> int | None:
    """The smallest k at which the base's mean pass@k is at least RL's (None: never)."""
    return next((k for k in ks if mean(curve(ev["base"], split, k)) >= mean(curve(ev["rl"], split, k))), None)


def beyond_base(ev: dict[str, list[dict]], split: str) -> tuple[list[int], list[int], int]:
    """Per RL seed: problems RL solves at least once that the base never does, and the reverse."""
    base = ev["base"][0][split]["solved"]
    gained = [sum(1 for p, c in r[split]["solved"].items() if c > 0 and base.get(p, 0) == 0) for r in ev["rl"]]
    lost = [sum(1 for p, c in r[split]["solved"].items() if c == 0 and base.get(p, 0) > 0) for r in ev["rl"]]
    return gained, lost, sum(1 for c in base.values() if c == 0)


def table(ev: dict[str, list[dict]], ks: list[int]) -> str:
    show = [k for k in ks if k in (1, 4, 16, 64, 256)]
    lines = ["| split | model | " + " | ".join(f"pass@{k}" for k in show) + " |", "|---|---|" + "---|" * len(show)]
    for split in SPLITS:
        for m in ("base", "sft", "rl"):
            lines.append(f"| {split} | {m} | " + " | ".join(fmt(curve(ev[m], split, k)) for k in show) + " |")
    lines += ["", "| split | base never solves (of the problems) | RL solves of those (per seed) | "
                  "base solves, RL never (per seed) | crossing k (base ≥ RL) |", "|---|---|---|---|---|"]
    for split in SPLITS:
        gained, lost, unsolved = beyond_base(ev, split)
        total = len(ev["base"][0][split]["solved"])
        lines.append(f"| {split} | {unsolved} of {total} | {', '.join(map(str, gained))} | "
                     f"{', '.join(map(str, lost))} | {crossing(ev, split, ks) or 'none'} |")
    return "\n".join(lines)


def plot(ctx: Ctx, ev: dict[str, list[dict]], ks: list[int]) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, split in zip(axes, SPLITS):
        for m, style in (("base", "o-"), ("sft", "s--"), ("rl", "^-")):
            ys = [100 * mean(curve(ev[m], split, k)) for k in ks]
            ax.plot(ks, ys, style, label=m, ms=4)
            if len(ev[m]) > 1:
                lo = [100 * min(curve(ev[m], split, k)) for k in ks]
                hi = [100 * max(curve(ev[m], split, k)) for k in ks]
                ax.fill_between(ks, lo, hi, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.set_title({"test": "ID: 2-digit addition", "ood": "OOD: 3-digit addition"}[split])
        ax.legend()
    fig.tight_layout()
    path = plot_path(ctx, ID)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def verdict(ev: dict[str, list[dict]], ks: list[int]) -> tuple[str, str]:
    """The claim's two halves: RL above the base at k=1 where it trained (ID, every seed), and no
    expansion on either split: the base within 1 point of RL (or above) at the largest k."""
    big = ks[-1]
    sharper = min(curve(ev["rl"], "test", 1)) > mean(curve(ev["base"], "test", 1))
    caught = {s: mean(curve(ev["base"], s, big)) >= mean(curve(ev["rl"], s, big)) - 0.01 for s in SPLITS}
    held = [sharper, *caught.values()]
    v = "reproduced" if all(held) else "partly" if any(held) else "not reproduced"
    yes = {True: "yes", False: "no"}
    return v, (f"Rule: RL above the base at k=1 on ID in every seed ({yes[sharper]}), and the base within 1 "
               f"point of RL or above at k={big} on ID ({yes[caught['test']]}) and OOD ({yes[caught['ood']]}).")


def run(ctx: Ctx) -> Result:
    n = ctx.samples(256)
    ks = [k for k in KS if k <= n]
    ev = evaluations(ctx, n)
    v, why = verdict(ev, ks)
    gained, _, unsolved = beyond_base(ev, "ood")
    big = ks[-1]
    headline = (f"ID pass@1 base {fmt(curve(ev['base'], 'test', 1))} → RL {fmt(curve(ev['rl'], 'test', 1))} %; "
                f"at k={big} base {fmt(curve(ev['base'], 'test', big))} vs RL {fmt(curve(ev['rl'], 'test', big))}; "
                f"RL solves {'/'.join(map(str, gained))} of {unsolved} OOD problems the base never does")
    return Result(v, why, headline, table(ev, ks), plot(ctx, ev, ks))
