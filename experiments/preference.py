"""Preferences vs verifiable rewards from one SFT checkpoint, at an equal budget of sampled completions.

    .venv/bin/python experiments/preference.py --seeds 0 1 2

1. Trains the default recipe's base and SFT stages once (seed 0): the shared start.
2. From it, per seed, the same number of steps x prompts x 8 samples for
   offline DPO (pairs from the frozen SFT model's samples, best vs worst by the verifier),
   online DPO (the same from the policy's own samples), GRPO with the verifier, and GRPO with a
   learned outcome reward model trained first on a fixed number of verifier labels (its own
   samples are counted separately: they are the RM's label budget).
3. Reward hacking: GRPO against the learned RM for `--hack-steps` steps, logging the RM's reward
   next to the verifier's accuracy on the same samples every step.
4. Writes docs/preference.md (table between the results markers) and docs/img/preference*.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rftkit.config import validate
from rftkit.train.build import check_names
from rftkit.train.loop import train

from runlog import ROOT, fmt, recipe_tree, run_all, shared_start, write_results

OTHERS = ["ipo", "simpo", "copg", "alol", "superhf", "crlft"]
"""The other preference and offline-RL recipes, each as shipped (its own learning rate), same budget."""
METHODS = ["dpo_offline", "dpo_online", "grpo_verifier", "grpo_rm", "dpo_offline_lr2e-5", "dpo_online_lr2e-5",
           *OTHERS]
RECIPE = {"dpo_offline": "dpo", "dpo_online": "online_dpo", "grpo_verifier": "grpo", "grpo_rm": "rm_grpo",
          "dpo_offline_lr2e-5": "dpo", "dpo_online_lr2e-5": "online_dpo", **{m: m for m in OTHERS}}
LR = {"dpo_offline_lr2e-5": 2e-5, "dpo_online_lr2e-5": 2e-5}
"""A sensitivity check: every method runs at its recipe's learning rate (2e-4 for all four); DPO
again at a tenth of it, to tell a method's gap from a learning rate that suits it less."""


def _tree(method: str, seed: int, start: Path, out: Path, args, rl_steps: int, tag: str = "") -> dict:
    tree = recipe_tree(RECIPE[method])
    keep = ["rm", "rl"] if method == "grpo_rm" else ["rl"]
    stages = [s for s in tree["stages"] if s["name"] in keep]
    for s in stages:
        if s["name"] == "rl":
            s.update(steps=rl_steps, batch_size=args.batch)
            if method in LR:
                s["lr"] = LR[method]
        else:  # the RM's label budget: rm_steps x rm_batch prompts x 8 samples, one pair per mixed group
            s.update(steps=args.rm_steps, batch_size=args.rm_batch)
    tree.update(out_dir=str(out), name=f"{method}{tag}-s{seed}", seed=seed, progress=False, stages=stages)
    tree["model"] = {**tree.get("model", {}), "init": str(start), "threads": args.threads}
    tree["data"] = {**tree["data"], "test_size": args.test_size}
    tree["eval"] = {**tree.get("eval", {}), "splits": ["test"]}
    return tree


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_one(method: str, seed: int, start: Path, out: Path, args) -> dict:
    cfg = validate(_tree(method, seed, start, out, args, args.steps), method)
    check_names(cfg)
    t0 = time.perf_counter()
    run = train(cfg)
    wall = time.perf_counter() - t0
    res = json.loads((run.dir / "eval" / "rl.json").read_text())["results"]["test"]
    recs = _records(run.dir)
    row = {"method": method, "seed": seed, "pass@1": res["pass@1"], "pass@16": res.get("pass@16", float("nan")),
           "greedy": res["greedy_acc"], "wall_s": wall,
           "pairs_per_step": _mean(r.get("data/pairs") for r in recs if r.get("stage") == "rl")}
    rm = [r for r in recs if "eval/rm/pair_accuracy" in r]
    if rm:
        row["rm_pair_acc"], row["rm_pairs"] = rm[-1]["eval/rm/pair_accuracy"], rm[-1]["eval/rm/pairs"]
        row["rm_train_pairs"] = sum(r.get("data/pairs", 0.0) for r in recs if r.get("stage") == "rm")
    return row


def run_hack(method: str, seed: int, start: Path, out: Path, args) -> dict:
    cfg = validate(_tree("grpo_rm", seed, start, out, args, args.hack_steps, tag="_long"), "grpo_rm long")
    run = train(cfg)
    recs = [r for r in _records(run.dir) if r.get("stage") == "rl" and "reward/rm/mean" in r]
    res = json.loads((run.dir / "eval" / "rl.json").read_text())["results"]["test"]
    return {"method": method, "seed": seed, "pass@1": res["pass@1"], "pass@16": res.get("pass@16", float("nan")),
            "rm_reward": [r["reward/rm/mean"] for r in recs], "accuracy": [r["reward/correct/mean"] for r in recs]}


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return statistics.mean(vals) if vals else float("nan")


def summarize(rows: list[dict], start_eval: dict) -> str:
    # wall time is in results.jsonl, not here: the comparison is at an equal sample budget
    lines = ["| method | held-out pass@1 (%) | pass@16 (%) | greedy (%) | pairs per step | RM held-out pair acc. (%) |",
             "|---|---|---|---|---|---|",
             f"| SFT start | {100 * start_eval['pass@1']:.1f} | {100 * start_eval['pass@16']:.1f} | "
             f"{100 * start_eval['greedy_acc']:.1f} | - | - |"]
    for m in METHODS:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        lines.append(f"| {m} | {fmt([r['pass@1'] for r in rs])} | {fmt([r['pass@16'] for r in rs])} | "
                     f"{fmt([r['greedy'] for r in rs])} | {fmt([r['pairs_per_step'] for r in rs], 1.0)} | "
                     f"{fmt([r.get('rm_pair_acc', float('nan')) for r in rs])} |")
    return "\n".join(lines)


def hack_table(rows: list[dict], window: int = 10) -> str:
    lines = ["| seed | RM reward, first / last 10 steps | verifier accuracy, first / last 10 steps | "
             "held-out pass@1 after (%) |", "|---|---|---|---|"]
    for r in rows:
        rm, acc = r["rm_reward"], r["accuracy"]
        lines.append(f"| {r['seed']} | {_mean(rm[:window]):.3f} / {_mean(rm[-window:]):.3f} | "
                     f"{_mean(acc[:window]):.3f} / {_mean(acc[-window:]):.3f} | {100 * r['pass@1']:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict], hack: list[dict], path: Path, hack_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ["pass@1", "pass@16"], strict=True):
        for i, m in enumerate(METHODS):
            ys = [100 * r[key] for r in rows if r["method"] == m]
            if ys:
                ax.scatter([i] * len(ys), ys, s=18)
                ax.bar(i, statistics.mean(ys), alpha=0.3)
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=30, ha="right")
        ax.set_ylabel(f"held-out {key} (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in hack:
        line, = ax.plot(r["rm_reward"], label=f"RM reward, seed {r['seed']}")
        ax.plot(r["accuracy"], linestyle="--", color=line.get_color(), label=f"verifier accuracy, seed {r['seed']}")
    ax.set_xlabel("GRPO step against the learned RM")
    ax.set_ylabel("mean over the step's samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(hack_path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rm-steps", type=int, default=40)
    ap.add_argument("--rm-batch", type=int, default=32)
    ap.add_argument("--hack-steps", type=int, default=120)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "preference")
    ap.add_argument("--start", type=Path, default=None, help="models/sft of an existing default run")
    args = ap.parse_args()
    start = args.start or shared_start(args.out, "default")
    start_eval = json.loads((start.parents[1] / "eval" / "sft.json").read_text())["results"]["test"]
    rows = run_all(args.out / "results.jsonl", "method", args.methods, args.seeds,
                   lambda m, s: run_one(m, s, start, args.out, args))
    hack = run_all(args.out / "hacking.jsonl", "method", ["grpo_rm_long"], args.seeds,
                   lambda m, s: run_hack(m, s, start, args.out, args)) if args.hack_steps else []
    plot(rows, hack, ROOT / "docs" / "img" / "preference.png", ROOT / "docs" / "img" / "preference_hacking.png")
    cmd = (f"python experiments/preference.py --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} "
           f"--batch {args.batch} --rm-steps {args.rm_steps} --rm-batch {args.rm_batch} --hack-steps {args.hack_steps}")
    labels = args.rm_steps * args.rm_batch * 8
    body = (f"Generated by `{cmd}`: {args.steps} steps x {args.batch} prompts x 8 samples per method "
            f"({args.steps * args.batch * 8} sampled completions), held-out test of {args.test_size} problems "
            f"(16 samples each at temperature 1). The learned RM first used {labels} verifier-labelled samples "
            f"({args.rm_steps} steps x {args.rm_batch} prompts x 8).\n\n{summarize(rows, start_eval)}\n\n"
            "![held-out pass@k by method](img/preference.png)\n\n"
            f"Reward hacking: GRPO against the learned RM for {args.hack_steps} steps.\n\n{hack_table(hack)}\n\n"
            "![RM reward vs verifier accuracy](img/preference_hacking.png)")
    write_results(ROOT / "docs" / "preference.md", body)
    print(summarize(rows, start_eval))
    print(hack_table(hack))


if __name__ == "__main__":
    main()
