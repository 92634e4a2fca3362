"""What every finding script shares: the context (seeds, quick mode, where runs and docs go),
shared starts, one training run, evaluating a saved model, reading a run, and the result that
becomes a section of docs/findings.md.

Quick mode (`--quick`, the test suite) shrinks every budget through `Ctx.steps/size/samples`
and `shrink`, so a finding runs end to end in seconds; its numbers then mean nothing.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.runlog import ROOT, fmt, run_all  # noqa: F401  (re-exported for the findings)
from rftkit.config import validate
from rftkit.plugins import import_file
from rftkit.recipe_base import recipe_tree
from rftkit.train.build import check_names
from rftkit.train.loop import train

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")
PARTS = Path(__file__).with_name("parts.py")
"""Extra registered parts (demo sources) some findings need; imported by path via `imports:`."""


@dataclass
class Ctx:
    """Where a finding writes and how big it runs."""

    root: Path = ROOT / "runs" / "findings"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    quick: bool = False
    docs: Path = ROOT / "docs"

    def steps(self, full: int) -> int:
        return min(full, 2) if self.quick else full

    def size(self, full: int) -> int:
        return min(full, 8) if self.quick else full

    def samples(self, full: int) -> int:
        return min(full, 4) if self.quick else full

    def dir(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


@dataclass
class Result:
    """What a finding found: a verdict (one of VERDICTS) with its reason, a headline for the
    summary table, the numbers as a markdown table, and the plot (under docs/img/findings)."""

    verdict: str
    reason: str
    headline: str
    table: str
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def tree_of(recipe: str = "default") -> dict:
    """A shipped recipe as a plain tree (`base:` resolved), safe to edit."""
    return copy.deepcopy(recipe_tree(recipe))


def stage(tree: dict, name: str) -> dict:
    return next(s for s in tree["stages"] if s["name"] == name)


def shrink(ctx: Ctx, tree: dict) -> dict:
    """Quick mode: every stage a couple of steps, tiny data and evaluation (a no-op otherwise)."""
    if not ctx.quick:
        return tree
    for s in tree["stages"]:
        s["steps"] = min(s["steps"], 2)
        s["batch_size"] = min(s.get("batch_size", 32), 4)
        s.pop("warmup_steps", None)
    data = tree.setdefault("data", {})
    data.update(train_size=min(data.get("train_size", 20000), 64), test_size=min(data.get("test_size", 200), 8),
                ood_size=min(data.get("ood_size", 200), 8))
    ev = tree.setdefault("eval", {})
    ev["n_samples"] = min(ev.get("n_samples", 16), 4)
    ev["ks"] = sorted({min(k, ev["n_samples"]) for k in ev.get("ks", [1, 4, 16])})
    ev["every"] = min(ev.get("every", 0), 1)
    return tree


def train_tree(ctx: Ctx, tree: dict, where: Path, name: str, seed: int = 0) -> Path:
    """Train `tree` as run `where/name` (one torch thread, no progress bar); return its run dir.
    A half-finished dir from an interrupted run is started over (finished runs are kept by
    the callers' result logs)."""
    tree = shrink(ctx, copy.deepcopy(tree))
    tree.update(out_dir=str(where), name=name, seed=seed, progress=False)
    tree["model"] = {**tree.get("model", {}), "threads": 1}
    tree.setdefault("checkpoint", {})["every"] = 10_000  # stage ends only: no mid-stage saves needed
    if (where / name).exists():
        shutil.rmtree(where / name)
    cfg = validate(tree, f"{where.name}/{name}")
    for file in cfg.imports:  # as `rftkit run` does before checking names: parts.py registers demo sources
        import_file(file)
    check_names(cfg)
    return train(cfg).dir


def start(ctx: Ctx, key: str, tree: dict) -> Path:
    """A start shared by findings: `tree` trained once (seed 0) into runs/findings/starts/<key>;
    returns its run dir (models/<stage> for each stage). Reused when its last model exists."""
    run = ctx.dir("starts", key)
    if (run / "models" / tree["stages"][-1]["name"]).is_dir():
        return run
    return train_tree(ctx, tree, ctx.dir("starts"), key, seed=0)


def default_start(ctx: Ctx) -> Path:
    """The default recipe's base (noisy demos, 600 steps) and SFT (10 steps) stages: the
    built-in testbed's start, shared by most findings (models/base, models/sft)."""
    tree = tree_of("default")
    tree["stages"] = [s for s in tree["stages"] if s["name"] != "rl"]
    return start(ctx, "default", tree)


def init_from(tree: dict, model_dir: Path) -> dict:
    tree["model"] = {**tree.get("model", {}), "init": str(model_dir)}
    return tree


def eval_json(run: Path, stage_name: str, split: str = "test") -> dict:
    return json.loads((run / "eval" / f"{stage_name}.json").read_text())["results"][split]


def eval_records(run: Path, stage_name: str, split: str = "test") -> list[dict]:
    path = run / "eval" / f"{stage_name}_{split}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def series(run: Path, key: str, stage_name: str | None = None) -> list[float]:
    """The values of metric `key` over steps (of one stage when given)."""
    return [r[key] for r in metrics(run) if key in r and (stage_name is None or r.get("stage") == stage_name)]


def mean(xs) -> float:
    xs = [x for x in xs if x == x]
    return statistics.mean(xs) if xs else float("nan")


def timed(fn, *args, **kw) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def plot_path(ctx: Ctx, fid: str) -> Path:
    path = ctx.docs / "img" / "findings" / f"{fid.lower()}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def pyplot():
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluate_model(model_dir: Path, tree: dict, *, n: int, ks: list[int], seed: int = 0,
                   splits: tuple[str, ...] = ("test",), temperature: float = 1.0, scaling=None) -> dict:
    """{split: (summary, records)}: `rftkit.eval.evaluate` (extended) of a saved model on the
    test sets `tree` builds (its data seed), n samples per problem at `temperature`, sampling
    seed `seed`. `scaling` (a ScalingSpec) adds test-time-scaling selectors."""
    import torch

    from rftkit.data.pool import build_pools
    from rftkit.eval.evaluate import evaluate
    from rftkit.model.io import load_model
    from rftkit.rollout.base import GENERATORS
    from rftkit.train.build import context_length, task_specs

    torch.set_num_threads(1)
    cfg = validate(tree, f"evaluation tree for {model_dir}")
    model, tok = load_model(model_dir, cfg.model.device)
    pools = build_pools(task_specs(cfg, context_length(model, tok), tok), min(cfg.data.train_size, 64),
                        cfg.data.test_size, cfg.data.ood_size, cfg.seed)
    gen = GENERATORS.bind(cfg.rollout.engine)(model, tok)
    extra = {} if scaling is None else {"scaling": scaling, "model": model}
    return {split: evaluate(gen, tok, pools.split(split), n=n, ks=[k for k in ks if k <= n], temperature=temperature,
                            max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens, seed=seed,
                            extended=True, stop=tuple(cfg.rollout.stop), **extra)
            for split in splits}
