"""Compare the RL recipes of rftkit from one shared SFT checkpoint (docs/algorithms_comparison.md).

    .venv/bin/python experiments/compare_algorithms.py --seeds 0 1 2

1. Trains the default recipe's base and SFT stages once (seed 0): the shared start.
2. For every recipe and seed, runs only the recipe's `rl` stage from that checkpoint with the
   same budget (steps x prompts x group size), then evaluates on the held-out test split.
3. Writes docs/algorithms_comparison.md (table: held-out pass@1, pass@16, final policy
   entropy, wall time; mean and spread over seeds) and docs/img/algorithms.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rftkit.algos.groups import group_rows
from rftkit.config import validate
from rftkit.train.build import check_names
from rftkit.train.loop import train

from runlog import ROOT, recipe_tree, run_all, shared_start, write_results

RECIPES = ["grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "remax", "lite_ppo",
           "gspo", "cispo", "gppo", "w_reinforce", "nsr", "psr", "nft", "ppo"]


def run_one(name: str, seed: int, start: Path, out: Path, steps: int, batch: int, test_size: int) -> dict:
    tree = recipe_tree(name)
    rl = next(s for s in tree["stages"] if s["name"] == "rl")
    rl.update(steps=steps, batch_size=batch)
    tree.update(out_dir=str(out), name=f"{name}-s{seed}", seed=seed, progress=False, stages=[rl])
    tree["model"] = {**tree.get("model", {}), "init": str(start), "threads": 1}
    tree["data"] = {**tree["data"], "test_size": test_size}
    tree["eval"] = {**tree.get("eval", {}), "splits": ["test"]}
    cfg = validate(tree, name)
    check_names(cfg)
    t0 = time.perf_counter()
    run = train(cfg)
    wall = time.perf_counter() - t0
    res = json.loads((run.dir / "eval" / "rl.json").read_text())["results"]["test"]
    records = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    ent = [r["policy/entropy"] for r in records if "policy/entropy" in r]
    return {"recipe": name, "seed": seed, "pass@1": res["pass@1"], "pass@16": res.get("pass@16", float("nan")),
            "greedy": res["greedy_acc"], "entropy": ent[-1] if ent else float("nan"), "wall_s": wall}


def summarize(rows: list[dict], start_eval: dict) -> str:
    def fmt(vals: list[float], scale: float = 100.0, digits: int = 1) -> str:
        m = statistics.mean(vals) * scale
        sd = f" ± {statistics.stdev(vals) * scale:.{digits}f}" if len(vals) > 1 else ""
        return f"{m:.{digits}f}{sd}"

    lines = ["| recipe | held-out pass@1 (%) | pass@16 (%) | greedy (%) | final entropy (nats/token) | wall time (s) |",
             "|---|---|---|---|---|---|",
             f"| SFT start (no RL) | {100 * start_eval['pass@1']:.1f} | {100 * start_eval['pass@16']:.1f} | "
             f"{100 * start_eval['greedy_acc']:.1f} | - | - |"]
    by = {k: [rows[i] for i in ix] for k, ix in group_rows(r["recipe"] for r in rows).items()}
    order = sorted(by, key=lambda k: -statistics.mean(r["pass@1"] for r in by[k]))
    for k in order:
        rs = by[k]
        lines.append(f"| {k} | {fmt([r['pass@1'] for r in rs])} | {fmt([r['pass@16'] for r in rs])} | "
                     f"{fmt([r['greedy'] for r in rs])} | {fmt([r['entropy'] for r in rs], 1.0, 3)} | "
                     f"{fmt([r['wall_s'] for r in rs], 1.0, 0)} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["recipe"] for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, n in enumerate(names):
        ys = [100 * r["pass@1"] for r in rows if r["recipe"] == n]
        ax.scatter([i] * len(ys), ys, s=18)
        ax.bar(i, statistics.mean(ys), alpha=0.3)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_ylabel("held-out pass@1 (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "compare_algorithms")
    ap.add_argument("--start", type=Path, default=None,
                    help="models/sft of an existing default run to start from (skips training the start)")
    args = ap.parse_args()
    start = args.start or shared_start(args.out, "default")
    start_eval = json.loads((start.parents[1] / "eval" / "sft.json").read_text())["results"]["test"]
    rows = run_all(args.out / "results.jsonl", "recipe", args.recipes, args.seeds,
                   lambda name, seed: run_one(name, seed, start, args.out, args.steps, args.batch, args.test_size))
    table = summarize(rows, start_eval)
    plot(rows, ROOT / "docs" / "img" / "algorithms.png")
    cmd = (f"python experiments/compare_algorithms.py --seeds {' '.join(map(str, args.seeds))} "
           f"--steps {args.steps} --batch {args.batch}")
    write_results(ROOT / "docs" / "algorithms_comparison.md",
                  f"Generated by `{cmd}` (steps={args.steps}, {args.batch} prompts x 8 samples per step, held-out "
                  f"test of {args.test_size} problems, 16 samples each at temperature 1).\n\n{table}\n\n"
                  "![pass@1 by recipe](img/algorithms.png)")
    print(table)


if __name__ == "__main__":
    main()
