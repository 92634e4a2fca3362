"""Config-time checks of `dist.*` (called by train/build.py `check_bounds`, before any training)."""

from __future__ import annotations

import importlib.util

from rftkit.errors import ConfigError


def check_dist(cfg, needs_of) -> None:
    """needs_of(stage) -> the stage's needs (train/build.py `_needs`)."""
    d = cfg.dist
    if d.enabled and importlib.util.find_spec("ray") is None:
        keys = [k for k in ("rollout_workers", "reward_workers", "learners") if getattr(d, k)]
        raise ConfigError(f"dist.{keys[0]}={getattr(d, keys[0])} runs workers on Ray, which is not installed: "
                          f"`pip install 'rftkit[dist]'` (or set dist.{keys[0]}=0 to run in one process)")
    if d.reward_workers and cfg.reward is None:
        raise ConfigError(f"dist.reward_workers={d.reward_workers}: the run has no `reward:` section, so every "
                          f"problem is scored by its own verifier in the driver and Ray reward workers would run "
                          f"nothing; add a reward section whose components run in processes, or set "
                          f"dist.reward_workers=0")
    if d.learners:
        _check_learners(cfg)
    if d.async_.max_staleness:
        for s in cfg.stages:
            if "values" in needs_of(s):
                raise ConfigError(f"dist.async.max_staleness={d.async_.max_staleness} with stage '{s.name}', which "
                                  f"trains a critic: the rollout thread would read the critic while the update "
                                  f"writes it; use a critic-free estimator (grpo, rloo, ...) or max_staleness 0")


def _check_learners(cfg) -> None:
    d = cfg.dist
    for s in cfg.stages:
        if s.rl.ref_reset_every:
            raise ConfigError(f"dist.learners={d.learners} with stages.{s.name}.rl.ref_reset_every: ProRL resets "
                              f"rewrite the reference and the optimizer state in the driver, which the learners "
                              f"do not follow; run that stage with dist.learners=0")
    cuda = str(cfg.model.device).startswith("cuda")
    if d.backend == "nccl" and not cuda:
        raise ConfigError(f"dist.backend=nccl needs CUDA devices, but model.device is {cfg.model.device}; use "
                          f"dist.backend=gloo (or auto)")
    if cuda and d.address is None:
        import torch

        have, want = torch.cuda.device_count(), d.learners * max(d.gpus_per_worker, 1.0)
        if want > have:
            raise ConfigError(f"dist.learners={d.learners} (x dist.gpus_per_worker={d.gpus_per_worker}) asks for "
                              f"{want:g} GPUs, but this machine has {have}; lower dist.learners, or join a Ray "
                              f"cluster with more (dist.address)")
