"""`rftkit eval PATH`: evaluate a saved model with the test sets of the run it came from."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from rftkit.config import load_config
from rftkit.data.pool import build_pools
from rftkit.errors import ConfigError
from rftkit.eval.evaluate import evaluate, headline_keys
from rftkit.model.io import load_model
from rftkit.recipe_base import load_recipe
from rftkit.report.progress import EvalProgress
from rftkit.rollout.base import GENERATORS
from rftkit.train.build import (
    check_device,
    check_prompts_fit,
    context_length,
    episode_limits,
    resolve_model_dir,
    task_specs,
)
from rftkit.train.env_checks import check_envs, check_images
from rftkit.train.rollout_rows import context_of
from rftkit.train.scaling_build import build_scaling


def find_run_config(path: Path) -> Path | None:
    for p in [path, *path.parents][:4]:
        if (p / "config.yaml").is_file():
            return p / "config.yaml"
    return None


def evaluate_path(path: Path, overrides: list[str], recipe: Path | None, prepare) -> Table:
    cfg_file = recipe or find_run_config(path)
    if cfg_file is None:
        raise ConfigError(f"'{path}' is not inside a run directory; pass --recipe to say which test sets to use")
    base = load_recipe(cfg_file)  # a recipe given by --recipe may have a `base:`
    cfg = prepare(load_config(None, overrides, base=base), cfg_file.parent)
    model_dir = resolve_model_dir(str(path))
    check_device(cfg.model.device)
    model, tok = load_model(model_dir, cfg.model.device)
    # the same rows as the run: prompts too long for this model are skipped (or rejected) again
    context = context_length(model, tok)
    pools = build_pools(task_specs(cfg, context, tok), cfg.data.train_size, cfg.data.test_size,
                        cfg.data.ood_size, cfg.seed)
    check_images(cfg, pools, tok)
    check_prompts_fit(cfg, pools, tok, context)
    check_envs(cfg, pools)
    gen = GENERATORS.bind(cfg.rollout.engine)(model, tok)
    spec = build_scaling(cfg.eval.scaling, cfg_file.parent, cfg.model.device)
    scaling = {} if spec is None else {"scaling": spec, "model": model}
    table = Table(title=f"eval of {model_dir} (%)")
    table.add_column("metric")
    results = {}
    with EvalProgress(True) as bar:
        for split in cfg.eval.splits:
            res, _ = evaluate(gen, tok, pools.split(split), n=cfg.eval.n_samples, ks=cfg.eval.ks,
                              temperature=cfg.eval.temperature,
                              max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens, seed=cfg.seed,
                              stop=tuple(cfg.rollout.stop), progress=bar.split(split), episodes=episode_limits(cfg),
                              context=context_of(model), **scaling)
            results[split] = res
    keys = headline_keys(next(iter(results.values())), cfg.eval.ks)
    for split in results:  # one column per split, one row per metric: fits any terminal
        table.add_column(split, justify="right")
    for k in keys:
        table.add_row(k, *[f"{100 * res[k]:.1f}" for res in results.values()])
    (model_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    return table
