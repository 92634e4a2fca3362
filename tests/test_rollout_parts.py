"""The rollout half as registered parts: nested names and knobs are checked before anything
trains, and a user adds a resampler and a reward transform from a file outside the package."""

import json
from pathlib import Path

import pytest
from test_recipes import shrink
from typer.testing import CliRunner

from rftkit.algos.layouts import GROUP_LAYOUTS, RowSpec
from rftkit.algos.resample import RESAMPLERS, ResampleCtx
from rftkit.cli import app
from rftkit.config import load_config, validate
from rftkit.errors import ConfigError
from rftkit.registry import Need, Registry, RegistryError
from rftkit.train.build import check_names
from rftkit.train.loop import train
from rftkit.types import Problem

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "my_rollout_parts.py"

TYPOS = [  # (override, the key the error must name, the suggestion it must make)
    ("stages.rl.objectives.policy.params.loss=ppo_clipp", "loss", "ppo_clip"),
    ("stages.rl.objectives.policy.params.agg=tokn_mean", "agg", "token_mean"),
    ("stages.rl.objectives.policy.params.loss_params={clip_hihg: 0.3}", "loss", "clip_high"),
    ("stages.rl.objectives=[{name: kl, params: {estimator: k4}}]", "estimator", "k3"),
    ("stages.rl.objectives=[{name: policy, weight: {name: cosin}}]", "weight", "cosine"),
    ("stages.rl.rollout.resample=[{name: dynamic_sampling, params: {mode: refil}}]", "mode", "refill"),
    ("stages.rl.rollout.resample=[{name: dynamic_samplin}]", "rollout.resample", "dynamic_sampling"),
    ("stages.rl.rollout.rewards=[{name: kl_penalty, params: {estimater: k1}}]", "kl_penalty", "estimator"),
    ("stages.rl.rollout.groups={name: prefix_rft, params: {ratio: {name: cosin}}}", "ratio", "cosine"),
    ("stages.rl.rollout.groups={name: on_polcy}", "rollout.groups", "on_policy"),
]


@pytest.mark.parametrize("override,key,hint", TYPOS, ids=[t[0].split("=")[0] + "=" + t[2] for t in TYPOS])
def test_nested_typos_fail_before_any_stage_runs(tmp_path, override, key, hint):
    result = CliRunner().invoke(app, ["run", "default", override, f"out_dir={tmp_path}"])
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "stages.rl" in text and key in text and f"Did you mean '{hint}'" in text, text
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is checked"


def test_teacher_kl_estimator_is_checked(tmp_path):
    cfg = load_config(ROOT / "rftkit" / "recipes" / "kdrl.yaml",
                      ["stages.rl.objectives.teacher_kl.params.estimator=k22"])
    with pytest.raises(ConfigError, match="teacher_kl.*estimator.*Did you mean 'k2'"):
        check_names(cfg)


def test_needs_are_one_validated_vocabulary():
    reg = Registry("test part")
    with pytest.raises(RegistryError, match="'rollouts' is not a valid Need"):
        reg.register("x", needs={"rollouts"})
    reg.register("y", needs={"rollout", "ref"})(lambda: None)
    assert reg.needs("y") == {Need.ROLLOUT, Need.REF} and "ref" in reg.needs("y")


def test_layouts_return_specs_and_never_generate():
    p = Problem(task="t", prompt="q=", answer="1", verifier="exact", demo="abcd#1")
    assert GROUP_LAYOUTS.bind("on_policy")(p, 3, 0.0) == (RowSpec(),) * 3
    assert GROUP_LAYOUTS.bind("demo_rows", {"rows": 9})(p, 4, 0.0)[-3:] == (RowSpec(demo=True),) * 3
    assert GROUP_LAYOUTS.bind("prefix_rft", {"rows": 1, "ratio": 0.5})(p, 2, 0.0) == (RowSpec(prefix="abc"), RowSpec())
    no_demo = Problem(task="t", prompt="q=", answer="1", verifier="exact")
    assert GROUP_LAYOUTS.bind("demo_rows")(no_demo, 2, 0.0) == (RowSpec(),) * 2
    ctx = ResampleCtx(round=0, attempt=0, kept=0, target=4, problem_of=lambda i: p)
    assert RESAMPLERS.bind("dynamic_sampling")([], ctx).more, "an empty round asks for a refill"


def test_old_flat_rl_flags_get_the_new_spelling(tmp_path):
    tree = {"stages": [{"name": "rl", "steps": 1, "objectives": [{"name": "policy"}],
                        "rl": {"zero_variance": "refill", "overlong_cache": 4}}]}
    with pytest.raises(ConfigError) as e:
        validate(tree, "old.yaml")
    assert "stages.rl.rl" in str(e.value) and "dynamic_sampling" in str(e.value) and "dapo_overlong" in str(e.value)


def test_user_resampler_and_reward_transform_from_a_file_outside_the_package(tmp_path):
    """docs/extending.md: one registered function each, plus YAML lines."""
    tree = load_config(ROOT / "rftkit" / "recipes" / "default.yaml").model_dump(mode="json")
    tree["imports"] = [str(EXAMPLE)]
    rl = next(s for s in tree["stages"] if s["name"] == "rl")
    rl["rollout"] = {"resample": [{"name": "keep_learnable", "params": {"min_correct": 1}}],
                     "rewards": [{"name": "brevity_bonus", "params": {"bonus": 0.2, "below": 64}}]}
    from rftkit.plugins import import_file

    import_file(str(EXAMPLE))
    cfg = validate(shrink(tree, tmp_path), "default+my_rollout_parts")
    check_names(cfg)
    run = train(cfg)
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    rl_rows = [r for r in rows if r.get("stage") == "rl" and "rollout/learnable_frac" in r]
    assert rl_rows, "the user's resampler ran in every RL step"
    assert all(r.get("reward/brevity_frac", 0) == 1.0 for r in rl_rows if "reward/mean" in r)


def test_rollout_bounds_are_checked_before_training(tmp_path):
    from rftkit.train.build import check_bounds

    too_long = load_config(ROOT / "rftkit" / "recipes" / "dapo.yaml",
                           ["stages.rl.rollout.rewards.dapo_overlong.params.cache=41"])
    with pytest.raises(ConfigError, match=r"dapo_overlong\.params\.cache.*at most|1\.\.rollout\.max_new_tokens \(40\)"):
        check_bounds(too_long)
    unused = load_config(ROOT / "rftkit" / "recipes" / "sft.yaml",
                         ["stages.sft.rollout.resample=[{name: dynamic_sampling}]"])
    with pytest.raises(ConfigError, match="samples no rollouts"):
        check_bounds(unused)
    critic = load_config(ROOT / "rftkit" / "recipes" / "ppo.yaml", ["stages.rl.advantage={name: grpo}"])
    with pytest.raises(ConfigError, match="value targets"):
        check_bounds(critic)


def test_a_token_level_transform_must_come_last():
    from rftkit.train.build import check_bounds

    cfg = load_config(ROOT / "rftkit" / "recipes" / "ppo.yaml",
                      ["stages.rl.rollout.rewards=[{name: kl_penalty}, {name: dapo_overlong}]"])
    with pytest.raises(ConfigError, match="kl_penalty.*list it last"):
        check_bounds(cfg)


def test_a_resampler_that_never_settles_is_stopped(monkeypatch):
    from types import SimpleNamespace

    import rftkit.train.step as step
    from rftkit.algos.resample import Decision
    from rftkit.registry import Bound

    calls = []

    def greedy(groups, ctx):
        calls.append(ctx.round)
        return Decision(more=True)

    parts = SimpleNamespace(resamplers=[Bound("greedy", greedy)], batch_size=1, pool=[],
                            sampler=SimpleNamespace(next=lambda n: [0]))
    monkeypatch.setattr(step, "sample_round", lambda parts, indices, seed, progress, metrics: [])
    with pytest.raises(RuntimeError, match="greedy.*more than 64 rounds"):
        step.sample_groups(parts, [0], 0, 0.0)
    assert len(calls) == step.MAX_RESAMPLE


def _reward_batch(**kw):
    import torch

    from rftkit.algos.shaping import RewardBatch

    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    base = dict(mask=mask, lengths=mask.sum(1), truncated=torch.tensor([False, True]),
                offpolicy=torch.tensor([False, False]), logp=torch.zeros(2, 4), ref_logp=None,
                max_new_tokens=4, kl_coef=None, rollouts=8)
    return RewardBatch(**{**base, **kw})


def test_length_penalty_hand_numbers():
    import torch

    from rftkit.algos.shaping import REWARD_TRANSFORMS

    rb = _reward_batch(offpolicy=torch.tensor([False, True]))
    out = REWARD_TRANSFORMS.bind("length_penalty", {"coef": 0.2})(torch.tensor([1.0, 1.0]), rb)
    # row 0: 2 tokens of a 4-token budget -> 1 - 0.2 * 2/4 = 0.9; row 1 is a demonstration: untouched
    assert out.rewards.tolist() == pytest.approx([0.9, 1.0]) and torch.equal(out.mask, rb.mask)


def test_kl_penalty_starts_from_coef_and_carries_the_adaptive_coefficient():
    import torch

    from rftkit.algos.shaping import REWARD_TRANSFORMS

    ref = torch.full((2, 4), -0.5)  # logp 0 - ref -0.5: KL (k1) 0.5 on every trained token
    fn = REWARD_TRANSFORMS.bind("kl_penalty", {"coef": 0.1, "target": 0.25, "horizon": 8})
    out = fn(torch.tensor([1.0, 0.0]), _reward_batch(ref_logp=ref))
    # token rewards: -0.1 * 0.5 per trained token, +1 on row 0's last trained token
    expected = torch.tensor([[0, -0.05, 0.95, 0], [0, -0.05, -0.05, -0.05]])
    assert torch.allclose(out.rewards, expected)
    assert out.metrics == pytest.approx({"policy/kl_reward": 0.5, "policy/kl_coef": 0.1})
    # KL 0.5 is twice the target: error clipped to +0.2, times 8 rollouts / horizon 8 -> 0.1 * 1.2
    assert out.kl_coef == pytest.approx(0.12)
    again = fn(torch.tensor([1.0, 0.0]), _reward_batch(ref_logp=ref, kl_coef=out.kl_coef))
    assert again.metrics["policy/kl_coef"] == pytest.approx(0.12), "the carried coefficient is used"
    fixed = REWARD_TRANSFORMS.bind("kl_penalty", {"coef": 0.1})(torch.tensor([1.0, 0.0]), _reward_batch(ref_logp=ref))
    assert fixed.kl_coef == pytest.approx(0.1), "without a target the coefficient stays"
