"""Config bounds: values that used to crash mid-run or train nothing
silently are one-paragraph ConfigErrors before anything runs, naming the dotted key (stages
by name), the value given and what was expected."""

from pathlib import Path

import pytest
import torch
import yaml

from rftkit.algos.advantages import ADVANTAGES
from rftkit.config import load_config, validate
from rftkit.errors import ConfigError
from rftkit.recipe_base import load_recipe
from rftkit.train.build import check_bounds, check_prompts_fit, task_specs

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"
RECIPES = sorted((Path(__file__).parents[1] / "rftkit" / "recipes").glob("*.yaml"))


def error_of(overrides: list[str], check=None) -> str:
    with pytest.raises(ConfigError) as info:
        cfg = load_config(TINY, overrides)
        if check is not None:
            check(cfg)
    return str(info.value)


@pytest.mark.parametrize("override, key, expected", [
    ("checkpoint.every=0", "'checkpoint.every'", "greater than or equal to 1"),
    ("checkpoint.keep=0", "'checkpoint.keep'", "greater than or equal to 1"),
    ("rollout.max_new_tokens=0", "'rollout.max_new_tokens'", "greater than or equal to 1"),
    ("rollout.max_new_tokens=-4", "'rollout.max_new_tokens'", "greater than or equal to 1"),
    ("rollout.group_size=0", "'rollout.group_size'", "greater than or equal to 1"),
    ("rollout.temperature=-0.5", "'rollout.temperature'", "greater than or equal to 0"),
    ("eval.temperature=-1", "'eval.temperature'", "greater than or equal to 0"),
    ("rollout.top_p=0", "'rollout.top_p'", "greater than 0"),
    ("rollout.top_p=1.5", "'rollout.top_p'", "less than or equal to 1"),
    ("optim.lr=-0.001", "'optim.lr'", "greater than 0"),
    ("stages.rl.lr=-1", "'stages.rl.lr'", "greater than 0"),
    ("stages.rl.batch_size=0", "'stages.rl.batch_size'", "greater than or equal to 1"),
    ("stages.base.steps=-1", "'stages.base.steps'", "greater than or equal to 0"),
    ("data.train_size=0", "'data.train_size'", "greater than or equal to 1"),
    ("eval.n_samples=0", "'eval.n_samples'", "greater than or equal to 1"),
    ("eval.max_new_tokens=0", "'eval.max_new_tokens'", "greater than or equal to 1"),
    ("model.max_seq_len=0", "'model.max_seq_len'", "greater than or equal to 1"),
    ("eval.splits=[]", "'eval.splits'", "at least 1 item"),
    ("model.size=huge", "'model.size'", "one of nano, micro, mini"),
    ("eval.ks=[1,8]", "'eval.ks'", "at most eval.n_samples (4)"),
    ("data.test_size=0", "'data.test_size'", "eval.splits"),
    ("data.tasks.0.difficulty=[3,1]", "'data.tasks.arithmetic.difficulty'", "low <= high"),
])
def test_bound_is_a_config_error_naming_key_value_and_expectation(override, key, expected):
    msg = error_of([override])
    given = repr(yaml.safe_load(override.split("=", 1)[1]))
    assert key in msg and expected in msg and f"got {given}" in msg, msg
    assert "\n\n" not in msg  # one paragraph


def test_stage_paths_use_the_stage_name_not_its_index():
    msg = error_of(["stages.rl.batch_size=0", "stages.rl.stepz=3"])
    assert "'stages.rl.batch_size'" in msg and "'stages.rl.stepz'" in msg, msg
    assert "stages.1" not in msg


def test_group_relative_advantage_needs_groups_of_two():
    msg = error_of(["rollout.group_size=1"], check_bounds)
    assert "'rollout.group_size'" in msg and "got 1" in msg and "stages.rl" in msg and "grpo" in msg, msg
    check_bounds(load_config(TINY, ["rollout.group_size=1", "stages.rl.advantage.name=reinforce"]))
    # a stage that never rolls out ignores group_size, whatever its (default) estimator
    check_bounds(load_config(TINY, ["rollout.group_size=1", "stages.rl.objectives=[{name: sft}]"]))


def test_more_minibatches_than_rows():
    # the rl stage also trains on demonstrations: one per prompt, 8 prompts
    msg = error_of(["stages.rl.minibatches=9"], check_bounds)
    assert "'stages.rl.minibatches'" in msg and "got 9" in msg and "8" in msg, msg
    check_bounds(load_config(TINY, ["stages.rl.minibatches=8"]))
    # rollouts only: batch_size x group_size = 32 rows
    only_rl = "stages.rl.objectives=[{name: policy}]"
    check_bounds(load_config(TINY, [only_rl, "stages.rl.minibatches=32"]))
    msg = error_of([only_rl, "stages.rl.minibatches=33"], check_bounds)
    assert "32 rows" in msg, msg


def test_device_the_machine_lacks():
    msg = error_of(["model.device=cuda:99"], check_bounds)
    assert "'model.device'" in msg and "got 'cuda:99'" in msg and "model.device=cpu" in msg, msg
    assert "'model.device'" in error_of(["model.device=bogus"], check_bounds)


def _group_of_one_advantage(name: str) -> torch.Tensor:
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.5])
    mask = torch.ones(4, 3)
    extra = {"values": torch.zeros(4, 3), "greedy_rewards": torch.zeros(4)}
    return ADVANTAGES.get(name)(rewards, torch.arange(4), mask, **extra)[0]


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_group_relative_marks_exactly_the_estimators_that_zero_groups_of_one(name):
    """The mark is checked against behaviour: with every group of one row, a group-relative
    estimator gives advantage 0 everywhere (nothing trains), any other does not."""
    marked = ADVANTAGES.mark(name, "group_relative")
    assert isinstance(marked, bool), f"{name}: no group_relative mark"
    assert marked == bool((_group_of_one_advantage(name) == 0).all())


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_are_within_bounds(recipe):
    cfg = validate(load_recipe(recipe), str(recipe))
    check_bounds(cfg)
    if cfg.model.path is None:  # the built-in model: its prompts fit (full eval splits, part of train)
        from rftkit.data.pool import build_pools
        from rftkit.model.tokenizer import CharTokenizer
        from rftkit.model.vision import VisionConfig

        tok = CharTokenizer()
        if cfg.model.vision:  # a visual recipe: each image takes the encoder's tokens of the prompt
            tok.image_tokens = VisionConfig(**cfg.model.vision.model_dump()).n_tokens
        pools = build_pools(task_specs(cfg), 500, cfg.data.test_size, cfg.data.ood_size, cfg.seed)
        check_prompts_fit(cfg, pools, tok, cfg.model.max_seq_len)


def test_prompts_longer_than_the_context_fail_before_training(tmp_path):
    from rftkit.train.loop import train

    cfg = load_config(TINY, ["model.max_seq_len=16", f"out_dir={tmp_path}", "stages.base.steps=1",
                             "stages.rl.steps=1"])
    with pytest.raises(ConfigError) as info:
        train(cfg)
    msg = str(info.value)
    assert "'model.max_seq_len'" in msg and "got 16" in msg and "max_new_tokens" in msg, msg
    assert not cfg.run_dir.exists()  # nothing ran, nothing written
