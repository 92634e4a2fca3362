"""When does imitation help and when does exploration? SFT, RL and hybrids at an equal budget.

    .venv/bin/python experiments/hybrids.py --seeds 0 1 2

Setting (after Ma et al. 2025, "Learning What RL Can't", arXiv:2506.07527): a base model is pretrained
(noisy demonstrations) on 2-digit addition ("easy") and 3-digit addition ("earlier");
2-digit subtraction ("hard") is never seen, so its pass@16 is ~0 and pure RL gets no signal
there. From that one base, every method trains on easy + hard for the same number of steps,
prompts per step and learning rate, then is evaluated per source: pass@1 and pass@16 on easy
and hard, and the drop on "earlier" (trained in the base, not now) measures forgetting.

Writes docs/hybrids_experiment.md (table) and docs/img/hybrids.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from rftkit.algos.groups import group_rows
from rftkit.config import validate
from rftkit.eval.passk import pass_at_k
from rftkit.train.build import check_names
from rftkit.train.loop import train

from runlog import ROOT, run_all, write_results

ADD = {"op": "add", "scratchpad": True}
SUB = {"op": "sub", "scratchpad": True}
DATA = {
    "tasks": [
        {"name": "arithmetic", "label": "easy", "difficulty": [2, 2], "ood_difficulty": [4, 4], "params": ADD},
        {"name": "arithmetic", "label": "hard", "difficulty": [2, 2], "ood_difficulty": [4, 4], "params": SUB},
        {"name": "arithmetic", "label": "earlier", "difficulty": [3, 3], "ood_difficulty": [4, 4], "params": ADD},
    ],
    "train_size": 20000, "test_size": 100, "ood_size": 10,
}
BASE = {"name": "base", "steps": 600, "batch_size": 64, "lr": 0.003, "warmup_steps": 20, "lr_schedule": "cosine",
        "tasks": ["easy", "earlier"], "demos": {"name": "noisy", "params": {"corrupt_prob": 0.5}},
        "objectives": [{"name": "sft"}]}
POLICY = {"name": "policy", "params": {"loss": "ppo_clip"}}
DR = "seq_mean_token_sum_norm"
# LUFFY as luffy.yaml: the released script's settings (unclipped on-policy rows, Dr.GRPO normalizer)
LUFFY_POLICY = {"name": "policy", "params": {"loss": "luffy", "loss_params": {"on_clip": False}, "agg": DR}}
GROUP = 8
LR = 0.0002  # one learning rate for every method (the default's RL lr; RL collapsed at 5e-4 here)


def methods(steps: int, batch: int) -> dict[str, list[dict]]:
    """Each method's stages after the base; all train on easy + hard."""
    rl = {"steps": steps, "batch_size": batch, "lr": LR, "tasks": ["easy", "hard"]}
    sft = {**rl, "batch_size": batch * GROUP}  # equal samples: as many sequences per step as RL's groups
    half = steps // 2
    return {
        "sft_only": [{**sft, "name": "train", "objectives": [{"name": "sft"}]}],
        "rl_only": [{**rl, "name": "train", "objectives": [POLICY]}],
        "reft": [{**sft, "name": "sft", "steps": half, "objectives": [{"name": "sft"}]},
                 {**rl, "name": "train", "steps": steps - half, "objectives": [POLICY]}],
        "relift": [{**rl, "name": "train", "demos": {"name": "relift", "params": {"size": batch}},
                    "objectives": [POLICY, {"name": "sft"}]}],
        "luffy": [{**rl, "name": "train", "rollout": {"groups": {"name": "demo_rows", "params": {"rows": 1}}},
                   "advantage": {"name": "dr_grpo"},
                   "objectives": [LUFFY_POLICY, {"name": "entropy", "weight": -0.001, "params": {"agg": DR}}]}],
        "prefix_rft": [{**rl, "name": "train",
                        "rollout": {"groups": {"name": "prefix_rft", "params": {
                            "rows": 2, "ratio": {"name": "cosine", "params": {"start": 0.95, "end": 0.05}}}}},
                        "objectives": [POLICY, {"name": "prefix_sft"}]}],
        "chord_mu": [{**rl, "name": "train", "objectives": [
            {**POLICY, "weight": {"name": "cosine", "params": {"start": 0.1, "end": 0.95}}},
            {"name": "sft", "weight": {"name": "cosine", "params": {"start": 0.9, "end": 0.05}}}]}],
        "chord_phi": [{**rl, "name": "train", "objectives": [{**POLICY, "weight": 0.9},
                                                             {"name": "chord_sft", "weight": 0.1}]}],
        "raft": [{**rl, "name": "train", "demos": {"name": "self_correct"}, "objectives": [{"name": "sft"}]}],
    }


def tree(name: str, stages: list[dict], out: Path, seed: int, init: str | None) -> dict:
    t = {"seed": seed, "name": name, "out_dir": str(out), "progress": False, "model": {"size": "micro", "threads": 1},
         "data": copy.deepcopy(DATA), "rollout": {"group_size": GROUP, "max_new_tokens": 48},
         "stages": stages, "eval": {"splits": ["test"], "n_samples": 16, "ks": [1, 16]}}
    if init:
        t["model"]["init"] = init
    return t


def per_source(run_dir: Path, stage: str) -> dict[str, dict[str, float]]:
    """pass@1 / pass@16 per task label from the per-problem eval records."""
    records = [json.loads(line) for line in (run_dir / "eval" / f"{stage}_test.jsonl").read_text().splitlines()]
    out = {}
    for label, rows in group_rows(r["source"] for r in records).items():
        rs = [records[i] for i in rows]
        n = len(rs[0]["samples"])
        out[label] = {f"pass@{k}": statistics.mean(pass_at_k(n, r["n_correct"], k) for r in rs) for k in (1, 16)}
    return out


def run(name: str, stages: list[dict], out: Path, seed: int, init: str | None) -> Path:
    cfg = validate(tree(name, stages, out, seed, init), name)
    check_names(cfg)
    return train(cfg).dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "hybrids")
    args = ap.parse_args()
    base_dir = args.out / "base"
    if not (base_dir / "models" / "base").is_dir():
        run("base", [BASE], args.out, 0, None)
    base = per_source(base_dir, "base")
    all_methods = methods(args.steps, args.batch)

    def one(name: str, seed: int) -> dict:
        t0 = time.perf_counter()
        d = run(f"{name}-s{seed}", all_methods[name], args.out, seed, str(base_dir / "models" / "base"))
        return {"method": name, "seed": seed, "wall_s": time.perf_counter() - t0,
                **{f"{src}/{k}": v for src, res in per_source(d, "train").items() for k, v in res.items()}}

    names = [m for m in all_methods if not args.methods or m in args.methods]
    rows = run_all(args.out / "results.jsonl", "method", names, args.seeds, one)
    (args.out / "results.json").write_text(json.dumps({"base": base, "rows": rows}, indent=1))
    write_doc(base, rows, args)


def write_doc(base: dict, rows: list[dict], args) -> None:
    cols = ["easy/pass@1", "easy/pass@16", "hard/pass@1", "hard/pass@16", "earlier/pass@1"]
    lines = ["| method | " + " | ".join(cols) + " | forgetting (earlier pass@1 drop) | wall s |",
             "|---" * (len(cols) + 3) + "|",
             "| base (start) | " + " | ".join(f"{100 * base[c.split('/')[0]][c.split('/')[1]]:.1f}" for c in cols)
             + " | - | - |"]
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]

        def cell(c: str, rs: list[dict] = rs) -> str:
            v = [100 * r[c] for r in rs]
            return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"

        drop = [100 * (base["earlier"]["pass@1"] - r["earlier/pass@1"]) for r in rs]
        lines.append(f"| {m} | " + " | ".join(cell(c) for c in cols)
                     + f" | {statistics.mean(drop):.1f} | {statistics.mean(r['wall_s'] for r in rs):.0f} |")
    plot(rows)
    cmd = "python experiments/hybrids.py --seeds " + " ".join(map(str, args.seeds))
    write_results(ROOT / "docs" / "hybrids_experiment.md",
                  f"Command: `{cmd}` ({args.steps} steps x {args.batch} prompts, group size {GROUP} for the RL "
                  f"methods, {args.batch * GROUP} demonstrations per step for SFT-only and ReFT's SFT stage (equal "
                  f"sequences per step), lr {LR} for all; mean ± std over seeds; held-out test, 100 problems per "
                  "source, 16 samples at temperature 1).\n\n" + "\n".join(lines)
                  + "\n\n![hard vs easy](img/hybrids.png)")


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        ax.scatter([100 * r["easy/pass@1"] for r in rs], [100 * r["hard/pass@1"] for r in rs], label=m, s=20)
    ax.set_xlabel("easy pass@1 (%)")
    ax.set_ylabel("hard pass@1 (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "img" / "hybrids.png", dpi=100)


if __name__ == "__main__":
    main()
