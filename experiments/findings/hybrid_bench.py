"""The shared bench of F3, F6 and F7: SFT, RL and hybrids from one base, at an equal budget.

Adapted from experiments/hybrids.py (docs/hybrids_experiment.md), after Ma et al. 2025
("Learning What RL Can't", arXiv:2506.07527): a base is pretrained from scratch on noisy
demonstrations of 2-digit addition ("easy") and 3-digit addition ("earlier"); 2-digit subtraction
("hard") is never seen. From it, every arm trains on easy + hard for the same steps x prompts, then
is evaluated per source (pass@1, pass@8 of n = 8) with each test problem's count of correct
samples kept, so F6 can bucket problems by the base's own pass rate.

Fixed data: the seed-0 pools of the base (its training pool and its held-out test sets) are
written once as JSONL files and every arm reads them through the `dataset` task. A run's seed
then varies the prompt order and the sampling only: every arm and seed is evaluated on the base's
test problems, none of which the base or an arm ever trained on.

`bench_rows(ctx, arms)` trains only the arms asked for, through one resumable results log, so
the three findings reuse each other's runs.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from pathlib import Path

from experiments.findings.common import (
    Ctx,
    eval_records,
    init_from,
    metrics,
    run_all,
    start,
    train_tree,
)
from rftkit.config import validate
from rftkit.data.pool import build_pools
from rftkit.eval.passk import pass_at_k
from rftkit.train.build import task_specs
from rftkit.types import ANSWER_MARKER

ADD = {"op": "add", "scratchpad": True}
SUB = {"op": "sub", "scratchpad": True}
LABELS = ("easy", "hard", "earlier")
DATA = {
    "tasks": [
        {"name": "arithmetic", "label": "easy", "difficulty": [2, 2], "ood_difficulty": [4, 4], "params": ADD},
        {"name": "arithmetic", "label": "hard", "difficulty": [2, 2], "ood_difficulty": [4, 4], "params": SUB},
        {"name": "arithmetic", "label": "earlier", "difficulty": [3, 3], "ood_difficulty": [4, 4], "params": ADD},
    ],
    "train_size": 20000, "test_size": 100, "ood_size": 10,
}
BASE = {"name": "base", "steps": 400, "batch_size": 64, "lr": 0.003, "warmup_steps": 20,
        "lr_schedule": "cosine", "tasks": ["easy", "earlier"],
        "demos": {"name": "noisy", "params": {"corrupt_prob": 0.5}}, "objectives": [{"name": "sft"}]}
# After 400 steps the base solved 3-digit addition in 2 % of samples: too little to measure forgetting
# (F3). A second, shorter cosine cycle on the same mixture brings it up (hybrids.py trains 600 steps).
BASE2 = {**BASE, "name": "base2", "steps": 200, "lr": 0.001, "warmup_steps": 10}
BASE_STEPS = BASE["steps"] + BASE2["steps"]
BASE_STAGE = BASE2["name"]
BASE_TEXT = ("pretrained from scratch (seed 0, batch 64) for 400 steps at lr 3e-3 and 200 more at lr 1e-3 (two "
             "cosine cycles: after the first, 3-digit addition was at 2 % pass@1, too little to measure forgetting)")
STEPS, PROMPTS, GROUP = 24, 16, 8
N_EVAL = 8  # samples per test problem for the arms (the base: 16, for F6's buckets); 2 shared CPU cores
FORGET_ARMS = ("sft_only", "rl_only", "rl_kl")
"""The arms F3 reads: only they are evaluated on "earlier" (the others on easy + hard, to save time)."""
LR = 0.0002  # hybrids.py's one learning rate for every method
BETA = 0.01  # rl_kl's KL weight (k3, to the base), as grpo.yaml
NOISY = 0.5  # share of prefix_rft_noisy's demonstrations with one wrong digit
POLICY = {"name": "policy", "params": {"loss": "ppo_clip"}}
DR = "seq_mean_token_sum_norm"
LUFFY_POLICY = {"name": "policy", "params": {"loss": "luffy", "loss_params": {"on_clip": False}, "agg": DR}}
PREFIX = {"groups": {"name": "prefix_rft", "params": {
    "rows": 2, "ratio": {"name": "cosine", "params": {"start": 0.95, "end": 0.05}}}}}
RESULTS = ("hybrid_bench", "results.jsonl")


def methods(steps: int, batch: int) -> dict[str, list[dict]]:
    """Each arm's stages after the base (hybrids.py's `methods()` plus rl_kl); all train on
    easy + hard; SFT sees batch x GROUP demonstrations per step (as many sequences as RL)."""
    rl = {"steps": steps, "batch_size": batch, "lr": LR, "tasks": ["easy", "hard"]}
    sft = {**rl, "batch_size": batch * GROUP}
    half = steps // 2
    prefix = [{**rl, "name": "train", "rollout": PREFIX, "objectives": [POLICY, {"name": "prefix_sft"}]}]
    return {
        "sft_only": [{**sft, "name": "train", "objectives": [{"name": "sft"}]}],
        "rl_only": [{**rl, "name": "train", "objectives": [POLICY]}],
        "rl_kl": [{**rl, "name": "train", "objectives": [POLICY, {"name": "kl", "weight": BETA,
                                                                   "params": {"estimator": "k3"}}]}],
        "reft": [{**sft, "name": "sft", "steps": half, "objectives": [{"name": "sft"}]},
                 {**rl, "name": "train", "steps": steps - half, "objectives": [POLICY]}],
        "relift": [{**rl, "name": "train", "demos": {"name": "relift", "params": {"size": batch}},
                    "objectives": [POLICY, {"name": "sft"}]}],
        "prefix_rft": prefix,
        "prefix_rft_noisy": prefix,
        "raft": [{**rl, "name": "train", "demos": {"name": "self_correct"}, "objectives": [{"name": "sft"}]}],
        "luffy": [{**rl, "name": "train", "rollout": {"groups": {"name": "demo_rows", "params": {"rows": 1}}},
                   "advantage": {"name": "dr_grpo"},
                   "objectives": [LUFFY_POLICY, {"name": "entropy", "weight": -0.001, "params": {"agg": DR}}]}],
    }


def base_tree() -> dict:
    return {"seed": 0, "model": {"size": "micro"}, "data": json.loads(json.dumps(DATA)),
            "rollout": {"group_size": GROUP, "max_new_tokens": 48}, "stages": [dict(BASE), dict(BASE2)],
            "eval": {"splits": ["test"], "n_samples": 16, "ks": [1, 16]}}


def base_run(ctx: Ctx) -> Path:
    """The shared base (seed 0, runs/findings/starts/hybrid): models/base2, eval/base2_test.jsonl
    (the first stage comes from the stage cache when it was trained before)."""
    return start(ctx, "hybrid", base_tree())


def corrupt_step(demo: str, rng: random.Random) -> str:
    """One result digit changed to another: in a step ("x+y=s;") or the answer, picked uniformly."""
    results, inside = [], False  # digit positions of each result (after "=" or the answer marker)
    for i, ch in enumerate(demo):
        if ch in "=" + ANSWER_MARKER:
            inside = True
            results.append([])
        elif ch == ";":
            inside = False
        elif inside and ch.isdigit():
            results[-1].append(i)
    results = [r for r in results if r]
    if not results:
        return demo
    i = rng.choice(rng.choice(results))
    return demo[:i] + rng.choice([d for d in "0123456789" if d != demo[i]]) + demo[i + 1:]


def data_files(ctx: Ctx) -> Path:
    """The base's seed-0 pools as JSONL (<label>_train, <label>_test, and <label>_noisy: the train
    demos with NOISY of them corrupted by `corrupt_step`); written once."""
    where = ctx.dir("hybrid_bench", "data")
    if (where / "done").is_file():
        return where
    where.mkdir(parents=True, exist_ok=True)
    cfg = validate(base_tree(), "hybrid bench data")
    pools = build_pools(task_specs(cfg), DATA["train_size"], DATA["test_size"], 0, 0)
    rng = random.Random("hybrid_bench/noisy")
    for label in LABELS:
        for split, probs in (("train", pools.train), ("test", pools.test)):
            rows = [{"prompt": p.prompt, "answer": p.answer, "demo": p.demo} for p in probs if p.source == label]
            _write(where / f"{label}_{split}.jsonl", rows)
            if split == "train":
                noisy = [{**r, "demo": corrupt_step(r["demo"], rng) if rng.random() < NOISY else r["demo"]}
                         for r in rows]
                _write(where / f"{label}_noisy.jsonl", noisy)
    (where / "done").write_text("ok\n")
    return where


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def arm_tree(ctx: Ctx, arm: str, base: Path, data: Path) -> dict:
    train = "noisy" if arm.endswith("_noisy") else "train"
    labels = LABELS if arm in FORGET_ARMS else LABELS[:2]
    tasks = [{"name": "dataset", "label": label, "params": {
        "path": str(data / f"{label}_{train if label != 'earlier' else 'train'}.jsonl"),
        "test_path": str(data / f"{label}_test.jsonl"), "columns": {"demo": "demo"}}} for label in labels]
    tree = {"model": {"size": "micro"}, "data": {"tasks": tasks, "test_size": DATA["test_size"], "ood_size": 0},
            "rollout": {"group_size": GROUP, "max_new_tokens": 48},
            "stages": json.loads(json.dumps(methods(ctx.steps(STEPS), PROMPTS)[arm])),
            "eval": {"splits": ["test"], "n_samples": N_EVAL, "ks": [1, N_EVAL]}}
    return init_from(tree, base / "models" / BASE_STAGE)


def per_source(records: list[dict]) -> dict[str, float]:
    """pass@1 and pass@N_EVAL per source label (pass@n under that name when n is smaller: quick mode)."""
    out = {}
    for label in LABELS:
        rs = [r for r in records if r["source"] == label]
        if rs:
            n = len(rs[0]["samples"])
            for k in (1, N_EVAL):
                out[f"{label}/pass@{k}"] = statistics.mean(pass_at_k(n, r["n_correct"], min(k, n)) for r in rs)
    return out


def solved(records: list[dict]) -> dict[str, list]:
    """prompt -> [source, correct samples, samples]: the per-problem record F6 buckets."""
    return {r["prompt"]: [r["source"], r["n_correct"], len(r["samples"])] for r in records}


def base_row(ctx: Ctx) -> dict:
    """The base's numbers in a row's shape (its stage-end evaluation, sampling seed 0)."""
    records = eval_records(base_run(ctx), BASE_STAGE)
    return {"arm": "base", **per_source(records), "solved": solved(records)}


def bench_rows(ctx: Ctx, arms: list[str]) -> list[dict]:
    """One row per (arm, seed): per-source pass@1/8, demonstrations consumed (sum of
    data/demos: gold ones except RAFT's own samples), wall seconds and per-problem records."""
    base, data = base_run(ctx), data_files(ctx)
    where = ctx.dir("hybrid_bench")

    def one(arm: str, seed: int) -> dict:
        t0 = time.perf_counter()
        run = train_tree(ctx, arm_tree(ctx, arm, base, data), where, f"{arm}-s{seed}", seed=seed)
        records = eval_records(run, "train")
        row = {"arm": arm, "seed": seed, "wall_s": time.perf_counter() - t0, **per_source(records),
               "demos": sum(r.get("data/demos", 0.0) for r in metrics(run)), "solved": solved(records)}
        for heavy in ("models", "checkpoints"):  # the row holds what the findings read
            shutil.rmtree(run / heavy, ignore_errors=True)
        return row

    return run_all(where / RESULTS[1], "arm", list(arms), ctx.seeds, one)


def by_arm(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["arm"], []).append(r)
    return out


def paired(rows: list[dict], a: str, b: str, value) -> tuple[float, float]:
    """Mean and std over seeds of value(row of a) - value(row of b), paired by seed."""
    arms = by_arm(rows)
    other = {r["seed"]: r for r in arms.get(b, [])}
    diffs = [value(r) - value(other[r["seed"]]) for r in arms.get(a, []) if r["seed"] in other]
    if not diffs:
        return float("nan"), float("nan")
    return statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0


def judge(diff: float, sd: float) -> str:
    """"holds" when a paired difference is positive and larger than its spread over seeds,
    "reversed" when negative and larger, "unclear" otherwise."""
    if diff != diff:
        return "unclear"
    if abs(diff) <= sd or diff == 0:
        return "unclear"
    return "holds" if diff > 0 else "reversed"
