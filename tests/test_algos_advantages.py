"""Advantage estimators and reward shaping against hand-computed numbers (CPU, fast)."""

import pytest
import torch

from rftkit.algos.advantages import (
    ADVANTAGES,
    discounted_returns,
    gae_returns,
    masked_whiten,
    token_rewards,
)
from rftkit.algos.losses import POLICY_LOSSES, token_mean
from rftkit.algos.shaping import (
    adaptive_kl_coef,
    dapo_overlong_penalty,
    kl_in_reward,
)

A = pytest.approx


def call(name, rewards, group_ids, mask, **kw):
    """The advantages of estimator `name` (estimators return (advantages, returns))."""
    return ADVANTAGES.get(name)(rewards, group_ids, mask, **kw)[0]


def ones(n, t=3):
    m = torch.ones(n, t)
    m[:, 0] = 0.0  # position 0 (prompt) is never trained
    return m


def test_grpo_hand_numbers_and_zero_group():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv = call("grpo", r, g, ones(8))
    # group 0: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 / 0.57735 = +-0.866025
    assert adv[:4, 1].tolist() == A([0.866025, -0.866025, 0.866025, -0.866025], abs=1e-5)
    assert adv[4:].abs().max() == 0.0
    assert adv[:, 0].abs().max() == 0.0
    assert ADVANTAGES.needs("grpo") == frozenset()


def test_dr_grpo_and_grpo_without_std():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0])
    g = torch.zeros(4, dtype=torch.long)
    assert call("dr_grpo", r, g, ones(4))[:, 1].tolist() == A([0.5, -0.5, 0.5, -0.5])
    assert torch.equal(call("grpo", r, g, ones(4), normalize_std=False), call("dr_grpo", r, g, ones(4)))


def test_rloo_hand_numbers():
    r = torch.tensor([1.0, 0.0, 0.0, 5.0])
    g = torch.tensor([0, 0, 0, 1])
    adv = call("rloo", r, g, ones(4))[:, 1]
    # r_i - mean of the others: 1 - 0 = 1, 0 - 0.5 = -0.5; a group of one gets 0
    assert adv.tolist() == A([1.0, -0.5, -0.5, 0.0])


def test_lite_ppo_group_mean_batch_std():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    g = torch.tensor([0, 0, 1, 1])
    # group means [.5, .5, 1, 1]; unbiased std of [1, 0, 1, 1] = 0.5
    assert call("lite_ppo", r, g, ones(4))[:, 1].tolist() == A([1.0, -1.0, 0.0, 0.0], abs=1e-5)


def test_reinforce_psr_nsr_w_reinforce():
    r = torch.tensor([1.0, 0.0])
    g = torch.tensor([0, 0])
    m = ones(2)
    assert call("reinforce", r, g, m)[:, 1].tolist() == [1.0, 0.0]
    assert call("psr", r, g, m)[:, 1].tolist() == [1.0, 0.0]
    assert call("nsr", r, g, m)[:, 1].tolist() == [0.0, -1.0]
    assert call("w_reinforce", r, g, m)[:, 1].tolist() == A([0.1, -1.0])
    assert call("w_reinforce", r, g, m, positive_weight=0.5)[:, 1].tolist() == A([0.5, -1.0])


def test_remax_needs_greedy():
    r = torch.tensor([1.0, 0.5])
    g = torch.tensor([0, 1])
    adv = call("remax", r, g, ones(2), greedy_rewards=torch.tensor([0.5, 0.5]))
    assert adv[:, 1].tolist() == A([0.5, 0.0])
    assert ADVANTAGES.needs("remax") == frozenset({"greedy"})
    with pytest.raises(ValueError, match="greedy_rewards"):
        call("remax", r, g, ones(2))


def test_token_level_rewards_are_summed_for_sequence_estimators():
    m = ones(2)
    tok = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 0.0]])
    seq = torch.tensor([1.0, 0.0])
    g = torch.tensor([0, 0])
    assert torch.allclose(call("grpo", tok, g, m), call("grpo", seq, g, m))


def test_token_rewards_and_discounted_returns():
    m = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    tok = token_rewards(torch.tensor([1.0, 2.0]), m)
    assert tok.tolist() == [[0, 0, 1, 0], [0, 0, 0, 2]]
    assert discounted_returns(tok, m, 0.5).tolist() == [[0, 0.5, 1, 0], [0, 0.5, 1, 2]]


def test_reinforce_pp_global_whitening_hand_numbers():
    m = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    adv = call("reinforce_pp", torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), m)
    # token returns 1,1,0,0,0: mean 0.4, unbiased var 0.3 -> (1-.4)/sqrt(.3), -.4/sqrt(.3)
    assert adv[0].tolist() == A([0.0, 1.095445, 1.095445, 0.0], abs=1e-5)
    assert adv[1].tolist() == A([0.0, -0.730297, -0.730297, -0.730297], abs=1e-5)


def test_reinforce_pp_baseline_hand_numbers():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = call("reinforce_pp_baseline", r, torch.tensor([0, 0, 1, 1]), ones(4))
    # centred [.5, -.5, 0, 0] on 8 tokens: mean 0, unbiased var 1/7 -> .5 * sqrt(7)
    assert adv[:, 1].tolist() == A([1.322876, -1.322876, 0.0, 0.0], abs=1e-5)


def test_masked_whiten_ignores_masked_entries():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_whiten(x, m).tolist()[0] == A([-0.707107, 0.707107, 0.0], abs=1e-5)


def test_gae_tiny_hand_example():
    m = torch.tensor([[0.0, 1.0, 1.0]])
    v = torch.tensor([[9.0, 0.5, 0.25]])
    adv = call("gae", torch.tensor([1.0]), torch.tensor([0]), m, values=v, gamma=1.0, lam=1.0, whiten=False)
    # t=2: 1 + 0 - .25 = .75; t=1: (0 + .25 - .5) + .75 = .5
    assert adv.tolist()[0] == A([0.0, 0.5, 0.75])
    assert gae_returns(torch.tensor([1.0]), m, v, gamma=1.0, lam=1.0).tolist()[0] == A([0.0, 1.0, 1.0])
    assert ADVANTAGES.needs("gae") == frozenset({"values"})
    with pytest.raises(ValueError, match="values"):
        call("gae", torch.tensor([1.0]), torch.tensor([0]), m)


def slow_gae(rewards, values, mask, gamma, lam):
    """Reference: per row, standard GAE over the trained positions only (V after the end = 0)."""
    adv = torch.zeros_like(values)
    for i in range(values.shape[0]):
        idx = [t for t in range(values.shape[1]) if mask[i, t] > 0]
        last, nxt = 0.0, 0.0
        for j, t in reversed(list(enumerate(idx))):
            r = float(rewards[i]) if j == len(idx) - 1 else 0.0
            delta = r + gamma * nxt - float(values[i, t])
            last = delta + gamma * lam * last
            adv[i, t] = last
            nxt = float(values[i, t])
    return adv


def test_gae_matches_slow_loop():
    torch.manual_seed(0)
    n, t = 6, 9
    mask = torch.zeros(n, t)
    for i, (start, length) in enumerate([(1, 5), (2, 7), (3, 2), (1, 8), (4, 1), (2, 4)]):
        mask[i, start:start + length] = 1.0
    values, rewards = torch.randn(n, t), torch.randn(n)
    ref = slow_gae(rewards, values, mask, 0.99, 0.95)
    got = call("gae", rewards, torch.zeros(n, dtype=torch.long), mask, values=values,
               gamma=0.99, lam=0.95, whiten=False)
    assert torch.allclose(got, ref, atol=1e-5)
    whitened = call("gae", rewards, torch.zeros(n, dtype=torch.long), mask, values=values, gamma=0.99, lam=0.95)
    assert torch.allclose(whitened, masked_whiten(ref, mask), atol=1e-5)
    assert torch.allclose(gae_returns(rewards, mask, values, gamma=0.99, lam=0.95), (ref + values) * mask, atol=1e-5)


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_every_estimator_is_zero_off_mask_and_declares_needs(name):
    torch.manual_seed(1)
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    fn = ADVANTAGES.get(name)
    assert isinstance(ADVANTAGES.needs(name), frozenset)
    adv, returns = fn(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]), mask,
                      values=torch.randn(3, 4), greedy_rewards=torch.tensor([0.5, 0.5, 0.5]))
    assert adv.shape == mask.shape
    assert adv[mask == 0].abs().max() == 0.0
    assert (returns is not None) == ADVANTAGES.mark(name, "returns", False)
    if returns is not None:
        assert returns.shape == mask.shape and returns[mask == 0].abs().max() == 0.0


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "lite_ppo", "reinforce_pp_baseline"])
@pytest.mark.parametrize("loss", ["ppo_clip", "pg"])
def test_equal_rewards_give_zero_advantage_and_zero_gradient(name, loss):
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = ones(6, 4)
    adv = call(name, r, g, mask)
    assert adv.abs().max() == 0.0
    logp = torch.randn(6, 4).requires_grad_()
    per_token, _ = POLICY_LOSSES.get(loss)(logp, logp.detach() - 0.1, adv, mask)
    token_mean(per_token, mask).backward()
    assert logp.grad.abs().max() == 0.0


# ---- shaping -------------------------------------------------------------------------------

def test_dapo_overlong_penalty_reference_points():
    max_len, cache = 20, 8
    lengths = torch.tensor([5, 12, 16, 20, 21, 40])
    # 0 up to L_max - L_cache = 12, -0.5 at L_max - L_cache/2 = 16, -1 at L_max and beyond
    assert dapo_overlong_penalty(lengths, max_len, cache).tolist() == A([0.0, 0.0, -0.5, -1.0, -1.0, -1.0])
    with pytest.raises(ValueError):
        dapo_overlong_penalty(lengths, 10, 0)


def test_kl_in_reward_hand_numbers():
    m = torch.tensor([[0.0, 1.0, 1.0]])
    logp = torch.tensor([[0.0, -1.0, -2.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0]])
    out = kl_in_reward(torch.tensor([1.0]), logp, ref, m, beta=0.1)
    # k1 = logp - ref = [.5, -1]; reward 1 on the last trained token
    assert out.tolist()[0] == A([0.0, -0.05, 1.1])
    k3 = kl_in_reward(torch.tensor([0.0]), logp, logp, m, beta=0.1, estimator="k3")
    assert k3.abs().max() == 0.0


def test_adaptive_kl_coef_hand_numbers():
    assert adaptive_kl_coef(0.1, observed_kl=0.2, target=0.1, horizon=8, n_steps=4) == A(0.11)   # error clipped to .2
    assert adaptive_kl_coef(0.1, observed_kl=0.09, target=0.1, horizon=8, n_steps=4) == A(0.095)  # error -.1
    assert adaptive_kl_coef(0.1, observed_kl=0.1, target=0.1, horizon=8, n_steps=4) == A(0.1)


