"""Fingerprint every shipped recipe with a short real run: a hash of the final weights and of
the logged metrics, for proving a refactor changes no number.

    .venv/bin/python experiments/recipe_fingerprints.py --start runs/default/models/sft \
        --out /tmp/fp --json before.json
    .venv/bin/python experiments/recipe_fingerprints.py ... --json after.json --compare before.json

Each recipe is loaded as `rftkit run` loads it (so `base:` composition and every default
apply), then shrunk: it starts from `--start` (a trained micro model, so rollouts have
rewards that vary and DAPO's filter, hints and prefixes all act), every stage runs at most 3
steps of 4 prompts x 4 samples on one thread, with a small evaluation, no stage cache.
Metrics that measure time are left out of the hash; everything else (losses, rewards,
advantages, eval numbers) is in. Recipes for Hugging Face models (`model.path`) are skipped,
unless `--hf DIR`: then they run as tests/test_real_recipes.py runs them (a tiny random Qwen2
built once in DIR, a few dataset rows, 3 steps).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from rftkit.config import load_config, validate
from rftkit.train.build import check_names
from rftkit.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time", "perf/")  # "time", "time/*": wall clock


def hf_config(recipe: Path, hf: Path, out: Path):
    """The real-workload recipe on the tiny Qwen2 in `hf` with test_real_recipes' rows and sizes."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_real_recipes as real

    from hf_fixtures import tiny_hf_model

    if not (hf / "config.json").is_file():
        tiny_hf_model(hf, "qwen2", max_pos=1024)
    train_f, test_f = real._data(out / f"{recipe.stem}-data", real.ROWS[recipe.stem])
    overrides = [f"out_dir={out}", f"name={recipe.stem}", f"model.path={hf}", f"data.tasks.0.params.path={train_f}",
                 f"data.tasks.0.params.test_path={test_f}", "stage_cache=false", *real.SMALL, "stages.0.steps=3"]
    if recipe.stem == "math_dapo":  # the 8-token budget needs a shorter overlong window
        overrides.append("stages.rl.rollout.rewards.dapo_overlong.params.cache=4")
    return load_config(recipe, overrides)


def shrunk(recipe: Path, start: Path, out: Path, hf: Path | None = None):
    tree = load_config(recipe).model_dump(mode="json")
    if tree["model"].get("path"):
        return hf_config(recipe, hf, out) if hf is not None else None
    tree.update(out_dir=str(out), name=recipe.stem, progress=False, stage_cache=False)
    tree["model"].update(init=str(start), size="micro", threads=1)
    tree["data"].update(train_size=64, test_size=4, ood_size=4)
    tree["eval"].update(n_samples=2, ks=[1, 2], every=0)
    tree["rollout"]["group_size"] = 4
    for s in tree["stages"]:
        s.update(steps=min(s["steps"], 3), batch_size=4, minibatches=min(s.get("minibatches", 1), 4))
    return validate(tree, str(recipe))


def weights_hash(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):  # one file, or an HF model's shards / adapter
        tensors = load_file(str(f))
        for k in sorted(tensors):
            h.update(k.encode())
            h.update(tensors[k].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def metrics_hash(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    keep = [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(recipe: Path, start: Path, out: Path, rehash: bool = False, hf: Path | None = None) -> dict:
    cfg = shrunk(recipe, start, out, hf)
    if cfg is None:
        return {"skipped": "model.path (Hugging Face recipe)"}
    run_dir = cfg.run_dir
    if not rehash:
        check_names(cfg)
        run_dir = train(cfg).dir
    last = cfg.stages[-1].name
    return {"weights": weights_hash(run_dir / "models" / last), "metrics": metrics_hash(run_dir / "metrics.jsonl")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start", type=Path, required=True, help="a micro model folder (models/<stage>)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rftkit-fingerprints"))
    ap.add_argument("--json", type=Path, required=True, help="write {recipe: fingerprint} here")
    ap.add_argument("--compare", type=Path, help="a previous --json to compare against")
    ap.add_argument("--hf", type=Path, help="run the Hugging Face recipes on a tiny random Qwen2 built here")
    ap.add_argument("--rehash", action="store_true", help="hash the run dirs under --out again, no training")
    ap.add_argument("--only", nargs="*", help="these recipe names only")
    a = ap.parse_args()
    recipes = sorted((ROOT / "rftkit" / "recipes").glob("*.yaml"))
    result = {}
    for r in recipes:
        if a.only and r.stem not in a.only:
            continue
        result[r.stem] = fingerprint(r, a.start, a.out, a.rehash, a.hf)
        print(r.stem, result[r.stem], flush=True)
    a.json.write_text(json.dumps(result, indent=1, sort_keys=True))
    if a.compare:
        before = json.loads(a.compare.read_text())
        diff = sorted(k for k in result if before.get(k) != result[k])
        diff += sorted(k for k in before if k not in result and not a.only)
        print(f"{len(result) - len(diff)} identical, {len(diff)} differ: {diff}")
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
