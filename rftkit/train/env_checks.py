"""Config-time checks of the environments a run's problems name (train/loop.py and `rftkit eval`
call `check_envs` once the pools are built): registered, their libraries installed, tool specs
attached for chat templates, and no evaluation search over episodes; and `check_images`: problems
with images meet a model that sees images."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

from rftkit.config import Config
from rftkit.envs.base import ENVS
from rftkit.errors import ConfigError, closest


def check_envs(cfg: Config, pools) -> None:
    """Every environment a problem names is registered (a typo fails here, not as counted
    env errors in every episode) and has its libraries installed; problems of tool
    environments carry their tools' specs (meta["tools"]) so a chat template shows the model
    the tools (built-in prompts ignore them)."""
    specs: dict[str, list | None] = {}
    for split in (pools.train, pools.test, pools.ood):
        for i, p in enumerate(split):
            if p.env and p.env not in specs:
                specs[p.env] = _env_specs(cfg, p, ENVS)
                _no_search_over_episodes(cfg, p)
            if p.env and specs[p.env] is not None and "tools" not in p.meta:
                split[i] = replace(p, meta={**p.meta, "tools": specs[p.env]})


def check_images(cfg: Config, pools, tok) -> None:
    """Problems with images need a model that sees them: the built-in VLM (model.vision) or an
    HF vision-language model (its processor loaded with the tokenizer)."""
    if getattr(tok, "image_tokens", 0) or getattr(tok, "processor", None) is not None:
        return
    for split in (pools.train, pools.test, pools.ood):
        p = next((p for p in split if p.images), None)
        if p is not None:
            fix = ("model.path names a text-only model: use a vision-language model folder (Qwen2-VL class)"
                   if cfg.model.path else "set model.vision (the built-in VLM: `model: {vision: {}}`)")
            raise ConfigError(f"{_task_key(cfg, p)}: task '{p.task}' gives problems with images, but the model "
                              f"is text-only; {fix}")


def _env_specs(cfg: Config, p, envs) -> list | None:
    """Check the environment `p` names; its tool specs, or None when it has no tools."""
    if p.env not in envs:
        raise ConfigError(f"{_task_key(cfg, p)}: task '{p.task}' names environment '{p.env}', which is not "
                          f"registered; registered: {', '.join(envs.names())}.{closest(p.env, envs.names())} A "
                          f"user environment registers itself from a file listed in `imports`.")
    cls = envs.get(p.env)
    missing = [lib for lib in getattr(cls, "requires", ()) if importlib.util.find_spec(lib) is None]
    if missing:
        raise ConfigError(f"{_task_key(cfg, p)}: environment '{p.env}' needs the Python library '{missing[0]}', "
                          f"which is not installed: pip install 'rftkit[agent]' (the built-in environments' libraries)")
    return cls.tool_specs() if hasattr(cls, "tool_specs") else None


def _no_search_over_episodes(cfg: Config, p) -> None:
    """Beam and step search extend one completion token by token or step by step; an episode's
    turns interleave with an environment, which they do not model."""
    sc = cfg.eval.scaling
    if sc is not None and (sc.beam_width or sc.step_search is not None):
        key = "eval.scaling.beam_width" if sc.beam_width else "eval.scaling.step_search"
        raise ConfigError(f"{key}: beam and step search apply to one-turn problems, but {_task_key(cfg, p)} "
                          f"('{p.task}') names environment '{p.env}'; best-of-n and voting work over episodes")


def _task_key(cfg: Config, p) -> str:
    labels = [t.label or t.name for t in cfg.data.tasks]
    return f"data.tasks[{labels.index(p.source)}]" if p.source in labels else "data.tasks"
