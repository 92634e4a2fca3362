"""Reuse a stage trained before instead of training it again (`stage_cache: true`, the default).

Most recipes start with the same 600-step base stage (and often the same SFT stage) as
`default.yaml`; on a laptop that is 1-2 minutes before the method under study even starts. A
stage's result is a function of what came before it, so it is cached under a key of exactly
that: the resolved config with every later stage and the output-only keys removed, the bytes
of rftkit's own source, the torch version, the thread count and the device. A hit copies the
stage's weights, its metrics lines, its end-of-stage evaluation and the state the next stage
reads (update counters, torch RNG), so the rest of the run is the one retraining gives: on
CPU bit-for-bit (tests/test_stage_cache.py). Anything else misses the cache and trains.

Only runs whose inputs the key fully sees are cached (`cacheable`): a built-in model (a Hugging
Face model's copies are large and its weights may change behind its path), no user code files,
no dataset files, no teacher.

    <out_dir>/.stage_cache/<key>/  model.safetensors, model.json, metrics.jsonl,
                                   eval/<stage>*.json(l), state.json, rng.safetensors,
                                   reward_model/ (a reward-model stage's reward_models/<stage>)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rftkit.model.io import atomic_dir, commit_dir, load_model, save_model, write_model_files
from rftkit.train.build import resolve_model_dir

_OUTPUT_ONLY = ("name", "out_dir", "progress", "logging", "checkpoint", "stage_cache")
_SOURCE_HASH: str | None = None


def _source_hash() -> str:
    """sha256 of rftkit's own .py and .yaml files: a code change invalidates every entry."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for f in sorted([*root.rglob("*.py"), *root.rglob("*.yaml")]):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
        _SOURCE_HASH = h.hexdigest()
    return _SOURCE_HASH


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def cacheable(cfg, idx: int) -> bool:
    """Only runs whose every input the key sees: a built-in model, no user code files
    (`imports`, a `reward` section's functions), no teacher and no dataset files, whose
    contents could change behind an unchanged path."""
    files = any(k in t.params for t in cfg.data.tasks for k in ("path", "test_path"))
    teacher = any(s.teacher for s in cfg.stages[: idx + 1])
    return bool(cfg.stage_cache) and not (cfg.model.path or cfg.imports or cfg.reward is not None or files or teacher)


def stage_key(cfg, idx: int) -> str | None:
    """The cache key of stage `idx` of `cfg`, or None where the stage is not cacheable."""
    if not cacheable(cfg, idx):
        return None
    tree = cfg.model_dump(mode="json")
    for k in _OUTPUT_ONLY:
        tree.pop(k, None)
    tree["stages"] = tree["stages"][: idx + 1]
    init = resolve_model_dir(cfg.model.init) if cfg.model.init else None
    extra = {"source": _source_hash(), "torch": torch.__version__, "threads": torch.get_num_threads(),
             "init": _file_hash(init) if init is not None else None}
    blob = json.dumps({"config": tree, **extra}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _entry(cfg, key: str) -> Path:
    return Path(cfg.out_dir) / ".stage_cache" / key


def store(run, idx: int, first_line: int, update_state: dict) -> None:
    """Save stage `idx` (just trained; run.state is at its end) under its key, atomically."""
    key = stage_key(run.cfg, idx)
    if key is None:
        return
    stage = run.cfg.stages[idx].name
    final = _entry(run.cfg, key)
    tmp = atomic_dir(final)
    write_model_files(run.model, run.tok, tmp)
    lines = (run.dir / "metrics.jsonl").read_text().splitlines(keepends=True)[first_line:]
    (tmp / "metrics.jsonl").write_text("".join(lines))
    (tmp / "eval").mkdir()
    for f in (run.dir / "eval").glob(f"{stage}*"):
        shutil.copy2(f, tmp / "eval" / f.name)
    if (run.dir / "reward_models" / stage).is_dir():  # a reward-model stage's RM (train/reward_stage.py)
        shutil.copytree(run.dir / "reward_models" / stage, tmp / "reward_model")
    (tmp / "state.json").write_text(json.dumps({"stage": stage, "global_step": run.state.global_step,
                                                "update": update_state}))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    commit_dir(tmp, final)


def restore(run, idx: int) -> dict | None:
    """Load stage `idx` from the cache into `run` (weights, metrics, eval files, torch RNG) and
    return its saved state ({global_step, update}); None on a miss."""
    key = stage_key(run.cfg, idx)
    if key is None or not (_entry(run.cfg, key) / "state.json").is_file():
        return None
    entry = _entry(run.cfg, key)
    stage = run.cfg.stages[idx].name
    cached, _ = load_model(entry, run.cfg.model.device)
    run.model.load_state_dict(cached.state_dict())
    save_model(run.model, run.tok, run.dir / "models" / stage)
    (run.dir / "eval").mkdir(exist_ok=True)
    for f in (entry / "eval").iterdir():
        shutil.copy2(f, run.dir / "eval" / f.name)
    if (entry / "reward_model").is_dir():
        shutil.copytree(entry / "reward_model", run.dir / "reward_models" / stage, dirs_exist_ok=True)
    for line in (entry / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        run.log.log(record)
        for sink in run.sinks:
            sink.log(record)
    torch.set_rng_state(load_file(str(entry / "rng.safetensors"))["torch"])
    return {**json.loads((entry / "state.json").read_text()), "entry": str(entry)}


__all__ = ["restore", "stage_key", "store"]
