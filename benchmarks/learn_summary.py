"""Learning speed over several runs (seeds): samples and training seconds until held-out greedy
accuracy first reaches each threshold, rftkit against TRL's best lr, from `bench.py` result files.

    .venv/bin/python benchmarks/learn_summary.py benchmarks/results/bench_cpu_learn*.json \
        --thresholds 0.85 0.875 0.9

First table: each run's steps, training seconds and held-out accuracy at its end (equal
samples where both ran all their steps). Second: time to each threshold. TRL's runs stop at
their first eval at or above the run's `--target` (0.9), so every lower threshold is read
from the same curve. "TRL best" is, per threshold, the TRL lr that got there in the least time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def first(curve: list[dict], threshold: float) -> dict | None:
    return next((p for p in curve if p["acc"] >= threshold - 1e-9), None)


def summarize(learn: dict, threshold: float) -> dict:
    """rftkit's and TRL's best (samples, seconds) to the threshold; None where not reached."""
    ours = first(learn["rftkit"]["curve"], threshold)
    trl = [(k, first(v["curve"], threshold)) for k, v in learn.items() if k.startswith("trl") and "curve" in v]
    reached = [(k, p) for k, p in trl if p is not None]
    best = min(reached, key=lambda kp: kp[1]["train_s"]) if reached else None
    return {"rftkit": ours, "trl": best[1] if best else None, "trl_lr": best[0] if best else None}


def fmt(p: dict | None) -> str:
    return "not reached" if p is None else f"{p['train_s']:.1f} s / {p['samples']} samples"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--thresholds", nargs="+", type=float, default=[0.85, 0.875, 0.9])
    opts = ap.parse_args(argv)
    runs = [(f, json.loads(Path(f).read_text())) for f in opts.files]
    print("| run | framework | steps | training s | s / step | held-out acc at the end | best eval |")
    print("|---|---|---|---|---|---|---|")
    for f, res in runs:
        for k, v in res["learn"].items():
            c = v.get("curve") or [{"step": 0, "train_s": 0.0, "acc": float("nan")}]
            last = c[-1]
            per = last["train_s"] / last["step"] if last["step"] else float("nan")
            print(f"| {Path(f).name} | {k} | {last['step']} | {last['train_s']:.1f} | {per:.3f} | {last['acc']:.3f} | "
                  f"{max(p['acc'] for p in c):.3f} |")
    print()
    print("| run | threshold | rftkit | TRL best lr | TRL | time ratio |")
    print("|---|---|---|---|---|---|")
    for f, res in runs:
        seed = res.get("command", "").split("--seed ")[1].split()[0] if "--seed " in res.get("command", "") else "0"
        for th in opts.thresholds:
            s = summarize(res["learn"], th)
            r, t = s["rftkit"], s["trl"]
            ratio = f"{t['train_s'] / r['train_s']:.2f}x" if r and t and r["train_s"] > 0 else "-"
            print(f"| {Path(f).name} (seed {seed}) | {th:g} | {fmt(r)} | {s['trl_lr'] or '-'} | {fmt(t)} | {ratio} |")


if __name__ == "__main__":
    main()
