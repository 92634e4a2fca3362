"""Objectives (policy with TIS / entropy mask, value, kl, nft wiring) and registry hygiene."""

import math
import re

import pytest
import torch

from rftkit.algos.advantages import ADVANTAGES, group_stats
from rftkit.algos.kl import KL_ESTIMATORS
from rftkit.algos.losses import AGGREGATIONS, POLICY_LOSSES, totals_of
from rftkit.algos.objectives import OBJECTIVES, LossInputs
from rftkit.registry import RegistryError

A = pytest.approx
SOURCE = re.compile(r"arXiv:\d{4}\.\d{4,5}|https?://")


@pytest.mark.parametrize("registry", [ADVANTAGES, POLICY_LOSSES, AGGREGATIONS, KL_ESTIMATORS, OBJECTIVES],
                         ids=lambda r: r.kind)
def test_every_registered_part_names_its_source(registry):
    for name in registry.names():
        doc = registry.get(name).__doc__ or ""
        assert SOURCE.search(doc), f"{registry.kind} '{name}' docstring names no paper (arXiv:) or URL"


def rollout_inputs(n=2, t=4, seed=0):
    torch.manual_seed(seed)
    mask = torch.ones(n, t)
    mask[:, 0] = 0.0
    logp = torch.randn(n, t).requires_grad_()
    return LossInputs(logp=logp, old_logp=logp.detach().clone(), advantages=torch.randn(n, t) * mask,
                      mask=mask, entropy=torch.rand(n, t))


def test_policy_defaults_equal_ppo_clip_token_mean():
    inp = rollout_inputs()
    value, metrics = OBJECTIVES.get("policy")(inp)
    per_token, _ = POLICY_LOSSES.get("ppo_clip")(inp.logp, inp.old_logp, inp.advantages, inp.mask)
    assert float(value.detach()) == A(float(AGGREGATIONS.get("token_mean")(per_token, inp.mask).detach()))
    assert metrics["loss/policy"] == A(float(value.detach()))


def test_policy_loss_params_are_validated():
    with pytest.raises(RegistryError, match="clip_hi"):
        OBJECTIVES.get("policy")(rollout_inputs(), loss="ppo_clip", loss_params={"clip_hi": 0.3})


def test_tis_cap_hand_numbers():
    mask = torch.ones(1, 2)
    logp = torch.zeros(1, 2, requires_grad=True)
    inp = LossInputs(logp=logp, old_logp=torch.zeros(1, 2), advantages=torch.ones(1, 2), mask=mask,
                     behav_logp=torch.tensor([[math.log(2.0), -math.log(3.0)]]))
    value, m = OBJECTIVES.get("policy")(inp, tis_cap=2.0)
    # weights min(exp(old - behav), 2) = [0.5, 2]; per-token loss -1 each -> mean(-.5, -2)
    assert float(value.detach()) == A(-1.25)
    assert m["policy/tis_weight_mean"] == A(1.25)
    assert m["policy/tis_clipfrac"] == A(0.5)
    value.backward()
    assert logp.grad.tolist()[0] == A([-0.25, -1.0])
    inp.behav_logp = None
    with pytest.raises(ValueError, match="behav_logp"):
        OBJECTIVES.get("policy")(inp, tis_cap=2.0)


def test_entropy_mask_keeps_top_fraction_and_the_normalizer():
    logp = torch.zeros(1, 5, requires_grad=True)
    inp = LossInputs(logp=logp, old_logp=torch.zeros(1, 5), advantages=torch.ones(1, 5),
                     mask=torch.ones(1, 5), entropy=torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3]]))
    value, m = OBJECTIVES.get("policy")(inp, loss="pg", entropy_mask_top=0.4)
    # k = ceil(.4 * 5) = 2 tokens (entropy .9 and .7) keep -A logp; normalizer stays 5 tokens
    value.backward()
    assert logp.grad.tolist()[0] == A([0.0, -0.2, 0.0, -0.2, 0.0])
    assert m["policy/entropy_mask_frac"] == A(0.4)
    assert m["policy/entropy_threshold"] == A(0.7)
    with pytest.raises(ValueError):
        OBJECTIVES.get("policy")(inp, entropy_mask_top=0.0)


def test_policy_passes_extra_inputs_to_nft():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1])
    inp = rollout_inputs(n=4)
    inp.rewards, inp.group_reward_mean = rewards, group_stats(rewards, groups)[0]
    inp.max_tokens = 8
    value, _ = OBJECTIVES.get("policy")(inp, loss="nft", agg="seq_mean_token_sum_norm")
    value.backward()
    dr = ADVANTAGES.get("dr_grpo")(rewards, groups, inp.mask)[0]
    logp2 = inp.logp.detach().clone().requires_grad_()
    pg, _ = POLICY_LOSSES.get("pg")(logp2, inp.old_logp, dr, inp.mask)
    AGGREGATIONS.get("seq_mean_token_sum_norm")(pg, inp.mask, totals_of(inp.mask, budget=8)).backward()
    assert torch.allclose(inp.logp.grad, logp2.grad, atol=1e-6)
    inp.rewards = None
    with pytest.raises(ValueError, match="nft"):
        OBJECTIVES.get("policy")(inp, loss="nft")


def test_value_objective_hand_numbers():
    v = torch.tensor([[1.0, 2.0]], requires_grad=True)
    inp = LossInputs(mask=torch.ones(1, 2), values=v, old_values=torch.tensor([[0.5, 2.0]]),
                     returns=torch.tensor([[2.0, 0.0]]))
    value, m = OBJECTIVES.get("value")(inp, clip=0.2)
    # token 0: (1-2)^2 = 1 vs (.7-2)^2 = 1.69 -> 1.69; token 1: 4 vs 4 -> 4; 0.5 * mean
    assert float(value.detach()) == A(0.5 * (1.69 + 4.0) / 2)
    assert m["value/clipfrac"] == A(0.5)
    assert m["loss/value"] == A(1.4225)
    value.backward()
    # token 0: the clipped branch wins and has no gradient; token 1: 0.5 * (1/2) * 2 (V - R) = 1
    assert v.grad.tolist()[0] == A([0.0, 1.0])
    plain, _ = OBJECTIVES.get("value")(inp, clip=None)
    assert float(plain.detach()) == A(0.5 * (1.0 + 4.0) / 2)
    assert OBJECTIVES.needs("value") == frozenset({"rollout", "values"})
    with pytest.raises(ValueError):
        OBJECTIVES.get("value")(LossInputs(mask=torch.ones(1, 2)))


def test_kl_objective_estimators():
    inp = rollout_inputs()
    inp.ref_logp = inp.logp.detach().clone()
    for est in KL_ESTIMATORS.names():
        value, m = OBJECTIVES.get("kl")(inp, estimator=est)
        assert float(value.detach()) == A(0.0, abs=1e-7)
        assert "policy/kl" in m


def test_objectives_declare_needs():
    assert OBJECTIVES.needs("policy") == frozenset({"rollout"})
    assert OBJECTIVES.needs("kl") == frozenset({"rollout", "ref"})
    assert OBJECTIVES.needs("sft") == frozenset({"demos"})
