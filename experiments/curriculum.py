"""Curricula compared on a mixture of too-easy, learnable, hard and too-hard sources (docs/curricula.md).

    .venv/bin/python experiments/curriculum.py --seeds 0 1 2

1. Trains base + SFT once (seed 0): the base and sft stages of rftkit/recipes/cur_uniform.yaml.
2. For uniform and every curriculum, runs the rl stage of rftkit/recipes/cur_<sampler>.yaml from
   that start (`model.init=<start>/models/sft`) with the same budget: --steps steps of --batch
   prompts x 8 samples, held-out greedy accuracy every --eval-every steps (eval.every).
   All runs use cur_uniform's data (the same mixture), so only the sampler differs.
3. Reports, per sampler (mean over seeds): rollouts and training wall time (eval time excluded)
   until the held-out greedy accuracy first reaches the start model's accuracy + each of --gains, the
   final held-out accuracy, the final accuracy per level (the hardest learnable level and the
   too-hard one), and the share of prompts drawn from each source. Writes the table into
   docs/curricula.md (between the results markers) and the curves into docs/img/curricula.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from rftkit.algos.groups import group_rows
from rftkit.config import validate
from rftkit.data.pool import build_pools
from rftkit.eval.evaluate import evaluate
from rftkit.model.io import load_model
from rftkit.rollout.base import GENERATORS
from rftkit.train.build import check_names, task_specs
from rftkit.train.loop import step_seed, train

from runlog import ROOT, recipe_tree, run_all, shared_start, write_results

SAMPLERS = ["uniform", "mixture", "easy_to_hard", "hard_to_easy", "band", "dump", "sec", "pcl", "adarft",
            "alp_gmm", "limr", "few_shot"]
LEVELS = {"easy": 2, "learnable": 3, "hard": 4, "too_hard": 5}


def cur_tree(name: str) -> dict:
    return recipe_tree(f"cur_{name}")


def rl_tree(name: str, seed: int, start: Path, out: Path, args) -> dict:
    tree = cur_tree(name)
    rl = next(s for s in tree["stages"] if s["name"] == "rl")
    rl.update(steps=args.steps, batch_size=args.batch)
    params = rl["sampler"].setdefault("params", {})
    if "total_steps" in params:
        params["total_steps"] = args.steps
    base = cur_tree("uniform")
    tree.update(out_dir=str(out), name=f"{name}-s{seed}", seed=seed, progress=False, stages=[rl],
                data=base["data"], rollout=base["rollout"])
    tree["model"] = {**base["model"], "init": str(start), "threads": 1}
    tree["eval"] = {"every": args.eval_every, "n_samples": 1, "ks": [1], "splits": ["test"]}
    tree["checkpoint"] = {"every": 10_000, "keep": 1}
    return tree


@torch.no_grad()
def start_accuracy(tree: dict, start: Path) -> dict[str, float]:
    """Greedy held-out accuracy of the start model on this seed's test set (the RL run's)."""
    cfg = validate(tree, "start eval")
    pools = build_pools(task_specs(cfg), cfg.data.train_size, cfg.data.test_size, cfg.data.ood_size, cfg.seed)
    model, tok = load_model(start, "cpu")
    gen = GENERATORS.bind(cfg.rollout.engine)(model, tok)
    res, _ = evaluate(gen, tok, pools.test, n=1, ks=[1], temperature=1.0,
                      max_new_tokens=cfg.rollout.max_new_tokens, seed=step_seed(cfg.seed + 17, 0))
    return res


def curve(records: list[dict], batch: int, group: int, start: dict) -> list[dict]:
    """Eval points: step, rollouts so far, training seconds so far (evals excluded), held-out
    greedy accuracy overall and per source (`eval/test/greedy_acc/src=<label>`, when logged)."""
    def point(step, rollouts, train_s, res, prefix):
        return {"step": step, "rollouts": rollouts, "train_s": train_s, "acc": res[prefix + "greedy_acc"],
                "src": {s: res[k] for s in LEVELS if (k := f"{prefix}greedy_acc/src={s}") in res}}

    out, eval_time, last_time = [point(0, 0, 0.0, start, "")], 0.0, 0.0
    for r in records:
        if "eval/test/greedy_acc" in r:
            out.append(point(r["step"], r["step"] * batch * group, last_time - eval_time, r, "eval/test/"))
            eval_time += r.get("time/eval", 0.0)
        elif "loss/total" in r:
            last_time = r["time"]
    return out


def attach_curves(rows: list[dict], out: Path, batch: int, group: int = 8) -> None:
    """(Re)compute every row's curve from its run's metrics.jsonl (run dir out/<sampler>-s<seed>)."""
    for row in rows:
        path = out / f"{row['sampler']}-s{row['seed']}" / "metrics.jsonl"
        if path.is_file():
            records = [json.loads(x) for x in path.read_text().splitlines()]
            row["curve"] = curve(records, batch, group, row["start"])
            zero = [r["adv/zero_std_frac"] for r in records if "adv/zero_std_frac" in r]
            row["signal"] = 1.0 - statistics.mean(zero) if zero else float("nan")
            row["fallback_steps"] = sum(r.get("curriculum/fallback", 0.0) for r in records)


def run_one(name: str, seed: int, start: Path, out: Path, args) -> dict:
    tree = rl_tree(name, seed, start, out, args)
    cfg = validate(tree, f"cur_{name}")
    check_names(cfg)
    acc0 = start_accuracy(tree, start)
    t0 = time.perf_counter()
    run = train(cfg)
    wall = time.perf_counter() - t0
    records = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((run.dir / "eval" / "rl.json").read_text())["results"]["test"]
    points = curve(records, args.batch, cfg.rollout.group_size, acc0)
    train_steps = [r for r in records if "loss/total" in r]
    shares = {s: statistics.mean(r.get(f"curriculum/source_frac/{s}", float("nan")) for r in train_steps)
              for s in LEVELS}
    return {"sampler": name, "seed": seed, "start": acc0, "final": final, "curve": points, "wall_s": wall,
            "shares": shares}


def reach(row: dict, gain: float) -> dict | None:
    target = row["start"]["greedy_acc"] + gain
    return next((p for p in row["curve"] if p["acc"] >= target - 1e-9), None)


def fmt(vals: list[float], scale: float = 1.0, digits: int = 1) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    m = statistics.mean(vals) * scale
    return f"{m:.{digits}f} ± {statistics.stdev(vals) * scale:.{digits}f}" if len(vals) > 1 else f"{m:.{digits}f}"


def summarize(rows: list[dict], gains: list[float]) -> str:
    by = {k: [rows[i] for i in ix] for k, ix in group_rows(r["sampler"] for r in rows).items()}
    cols = [f"rollouts (k) / train s to +{100 * g:.0f} pts [reached]" for g in gains]
    head = ["sampler", *cols, "final held-out (%)", "final d3 learnable (%)", "final d4 hard (%)",
            "final d5 too hard (%)", "groups with signal (%)", "prompts drawn: easy / learnable / hard / too hard (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in [s for s in SAMPLERS if s in by] + sorted(set(by) - set(SAMPLERS)):
        rs = by[name]
        cells = [name]
        for g in gains:
            got = [h for h in (reach(r, g) for r in rs) if h is not None]
            cells.append(f"{fmt([h['rollouts'] / 1000 for h in got])} / {fmt([h['train_s'] for h in got], digits=0)} "
                         f"[{len(got)}/{len(rs)}]")
        cells.append(fmt([r["final"]["greedy_acc"] for r in rs], 100))
        cells += [fmt([r["final"].get(f"greedy_acc/d{LEVELS[k]}", float("nan")) for r in rs], 100)
                  for k in ("learnable", "hard", "too_hard")]
        cells.append(fmt([r.get("signal", float("nan")) for r in rs], 100, 0))
        share = " / ".join(fmt([r["shares"][s] for r in rs], 100, 0) for s in LEVELS)
        if name == "uniform":  # logs no shares: it draws in proportion to the pool (equal sources)
            share = "25 / 25 / 25 / 25 (pool shares)"
        cells.append(share)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_curve(rs: list[dict], key) -> tuple[list[float], list[float]]:
    n = min(len(r["curve"]) for r in rs)
    xs = [rs[0]["curve"][j]["rollouts"] / 1000 for j in range(n)]
    ys = [100 * statistics.mean(key(r["curve"][j]) for r in rs) for j in range(n)]
    return xs, ys


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s for s in SAMPLERS if any(r["sampler"] == s for r in rows)]
    fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(17, 4.8))
    for n in names:
        rs = [r for r in rows if r["sampler"] == n]
        style = {"lw": 2.4, "color": "k"} if n == "uniform" else {"lw": 1.2}
        ax.plot(*_mean_curve(rs, lambda p: p["acc"]), marker="o", ms=2.5, label=n, **style)
        if all("learnable" in p.get("src", {}) for r in rs for p in r["curve"]):
            cx.plot(*_mean_curve(rs, lambda p: p["src"]["learnable"]), marker="o", ms=2.5, label=n, **style)
    ax.set_title("held-out greedy accuracy, all levels")
    cx.set_title("held-out greedy accuracy, learnable level (3 digits)")
    for a in (ax, cx):
        a.set_xlabel("rollouts (thousands)")
        a.set_ylabel("%, mean over seeds")
    ax.legend(fontsize=7, ncol=2)
    for i, n in enumerate(names):
        rs = [r for r in rows if r["sampler"] == n]
        for j, (lvl, c) in enumerate((("learnable", "tab:blue"), ("hard", "tab:orange"))):
            ys = [100 * r["final"].get(f"greedy_acc/d{LEVELS[lvl]}", 0.0) for r in rs]
            bx.bar(i + 0.4 * j - 0.2, statistics.mean(ys), width=0.4, color=c, alpha=0.5, label=lvl if i == 0 else None)
            bx.scatter([i + 0.4 * j - 0.2] * len(ys), ys, s=10, color=c)
    bx.set_xticks(range(len(names)), names, rotation=60, ha="right")
    bx.set_title("final greedy accuracy per level (%)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def write_doc(table: str, args, rows: list[dict]) -> None:
    doc = ROOT / "docs" / "curricula.md"
    starts = [r["start"]["greedy_acc"] for r in rows]
    cmd = "python experiments/curriculum.py --seeds " + " ".join(map(str, args.seeds))
    write_results(doc, f"Command: `.venv/bin/{cmd}` (steps={args.steps}, {args.batch} prompts x 8 samples per step, "
                  f"held-out greedy accuracy every {args.eval_every} steps; targets = start accuracy + "
                  f"{', '.join(f'{100 * g:.0f}' for g in args.gains)} points; start accuracy {fmt(starts, 100)} %)."
                  f"\n\n{table}\n\n![curricula](img/curricula.png)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samplers", nargs="+", default=SAMPLERS)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--gains", type=float, nargs="+", default=[0.03, 0.05, 0.07])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "curriculum")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = shared_start(args.out, "cur_uniform", threads=1)
    rows = run_all(args.out / "results.jsonl", "sampler", args.samplers, args.seeds,
                   lambda name, seed: run_one(name, seed, start, args.out, args))
    results = map(json.loads, (args.out / "results.jsonl").read_text().splitlines())
    done = {(r["sampler"], r["seed"]): r for r in results}
    rows += [r for (n, sd), r in done.items() if n not in args.samplers and sd in args.seeds]  # earlier variants
    attach_curves(rows, args.out, args.batch)
    table = summarize(rows, args.gains)
    plot(rows, ROOT / "docs" / "img" / "curricula.png")
    write_doc(table, args, rows)
    print(table)


if __name__ == "__main__":
    main()
