"""Policy losses, aggregations and KL estimators against hand-computed numbers (CPU, fast).

The "policy" in these tests is a leaf tensor `logp` [N, T]: d loss / d logp is the per-token
weight on grad log pi, which is what the papers' gradient formulas state.
"""

import math

import pytest
import torch

from rftkit.algos.advantages import ADVANTAGES, group_stats
from rftkit.algos.kl import KL_ESTIMATORS
from rftkit.algos.losses import AGGREGATIONS, POLICY_LOSSES, AggTotals, totals_of

A = pytest.approx
LN = math.log


def grad_of(name, logp0, old, adv, mask, agg="token_mean", **knobs):
    logp = logp0.clone().requires_grad_()
    per_token, metrics = POLICY_LOSSES.get(name)(logp, old, adv, mask, **knobs)
    AGGREGATIONS.get(agg)(per_token, mask, totals_of(mask, budget=16)).backward()
    return per_token.detach(), logp.grad, metrics


# ---- aggregations --------------------------------------------------------------------------

LOSS = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 6.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("name,expected", [
    ("token_mean", 7 / 3),                 # (1 + 2 + 4) / 3 tokens
    ("seq_mean_token_mean", 2.75),         # (1.5 + 4) / 2 rows with tokens
    ("seq_mean_token_sum", 3.5),           # (3 + 4) / 2
    ("seq_mean_token_sum_norm", 7 / (3 * 10)),  # Dr. GRPO: 7 / (G = 3 rows x MAX_TOKENS = 10)
])
def test_aggregations_hand_numbers(name, expected):
    assert float(AGGREGATIONS.get(name)(LOSS, MASK, totals_of(MASK, budget=10))) == A(expected)


def test_dr_grpo_normalizer_is_a_constant_not_the_padded_width():
    """Padding the batch wider changes nothing; without a budget it refuses instead of guessing."""
    wide_loss, wide_mask = torch.cat([LOSS, torch.ones(3, 6)], 1), torch.cat([MASK, torch.zeros(3, 6)], 1)
    agg = AGGREGATIONS.get("seq_mean_token_sum_norm")
    assert float(agg(wide_loss, wide_mask, totals_of(wide_mask, budget=10))) == A(7 / 30)
    with pytest.raises(ValueError, match="budget"):
        agg(LOSS, MASK)


@pytest.mark.parametrize("name,expected", [
    ("token_mean", 3 / 6),                 # the slice's token sum / the whole batch's 6 tokens
    ("seq_mean_token_mean", 1.5 / 4),      # row 0's token mean / 4 rows with tokens in the whole batch
    ("seq_mean_token_sum", 3 / 4),
    ("seq_mean_token_sum_norm", 3 / (5 * 10)),  # 5 rows in the whole batch, budget 10
])
def test_aggregation_of_a_micro_batch_divides_by_the_whole_batch(name, expected):
    totals = AggTotals(tokens=6, seqs=4, rows=5, budget=10)
    assert float(AGGREGATIONS.get(name)(LOSS[:1], MASK[:1], totals)) == A(expected)


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_micro_batch_shares_sum_to_the_whole_batch(name):
    torch.manual_seed(0)
    loss, mask = torch.randn(7, 5), (torch.rand(7, 5) > 0.4).float()
    mask[3] = 0.0
    totals = totals_of(mask, budget=8)
    whole = AGGREGATIONS.get(name)(loss, mask, totals)
    parts = sum(AGGREGATIONS.get(name)(loss[s], mask[s], totals) for s in (slice(0, 2), slice(2, 3), slice(3, 7)))
    assert float(parts) == A(float(whole), abs=1e-6)


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_aggregation_of_an_empty_mask_is_zero_with_grad(name):
    x = torch.ones(2, 3, requires_grad=True)
    out = AGGREGATIONS.get(name)(x, torch.zeros(2, 3), totals_of(torch.zeros(2, 3), budget=4))
    assert float(out.detach()) == 0.0
    out.backward()


# ---- pg / ppo_clip / dual_clip / gppo ------------------------------------------------------

def test_pg_hand_numbers():
    logp = torch.tensor([[-1.0, -2.0]])
    per_token, grad, _ = grad_of("pg", logp, logp - 0.3, torch.tensor([[2.0, -1.0]]), torch.ones(1, 2))
    assert per_token.tolist()[0] == A([2.0, -2.0])
    assert grad.tolist()[0] == A([-1.0, 0.5])   # -A / 2 tokens


def test_ppo_clip_hand_numbers():
    old = torch.zeros(1, 3)
    logp = torch.tensor([[LN(1.5), LN(1.5), LN(0.5)]])
    adv = torch.tensor([[1.0, -1.0, -1.0]])
    per_token, grad, m = grad_of("ppo_clip", logp, old, adv, torch.ones(1, 3))
    # A>0, rho 1.5 -> clipped 1.2; A<0, rho 1.5 -> unclipped 1.5; A<0, rho .5 -> clipped .8
    assert per_token.tolist()[0] == A([-1.2, 1.5, 0.8])
    assert grad.tolist()[0] == A([0.0, 0.5, 0.0])   # d(1.5)/dlogp = rho / 3 tokens
    assert m["policy/clipfrac"] == A(2 / 3)
    assert m["policy/ratio_max"] == A(1.5)


def test_dual_clip_caps_loss_for_negative_advantages():
    old = torch.zeros(1, 3)
    logp = torch.tensor([[LN(5.0), LN(2.0), LN(5.0)]])
    adv = torch.tensor([[-1.0, -1.0, 1.0]])
    per_token, grad, m = grad_of("dual_clip", logp, old, adv, torch.ones(1, 3))
    # rho 5, A=-1: ppo loss 5 capped at c|A| = 3; rho 2: 2 < 3 kept; A>0 untouched (-1.2)
    assert per_token.tolist()[0] == A([3.0, 2.0, -1.2])
    assert grad[0, 0] == 0.0
    assert m["policy/clipfrac_lower"] == A(1 / 3)
    ppo, _ = POLICY_LOSSES.get("ppo_clip")(logp, old, adv, torch.ones(1, 3))
    assert ppo[0, 0] == A(5.0)
    big = torch.tensor([[LN(50.0), LN(500.0)]])
    capped, _ = POLICY_LOSSES.get("dual_clip")(big, torch.zeros(1, 2), torch.tensor([[-2.0, -0.5]]),
                                              torch.ones(1, 2), clip_c=3.0)
    assert capped.tolist()[0] == A([6.0, 1.5])
    with pytest.raises(ValueError):
        POLICY_LOSSES.get("dual_clip")(big, torch.zeros(1, 2), -torch.ones(1, 2), torch.ones(1, 2), clip_c=1.0)


def test_gppo_forward_equals_clip_higher_ppo_and_keeps_clipped_gradients():
    torch.manual_seed(0)
    old = torch.zeros(4, 6)
    logp = torch.empty(4, 6).uniform_(LN(0.4), LN(2.5))   # ratios in (0.4, 2.5): dual cap (3) inactive
    adv = torch.randn(4, 6)
    mask = torch.ones(4, 6)
    knobs = dict(clip_low=0.2, clip_high=0.28)
    ppo, g_ppo, _ = grad_of("ppo_clip", logp, old, adv, mask, **knobs)
    gppo, g_gppo, _ = grad_of("gppo", logp, old, adv, mask, **knobs)
    assert torch.allclose(ppo, gppo, atol=1e-6)
    ratio = logp.exp()
    clipped = ((adv > 0) & (ratio > 1.28)) | ((adv < 0) & (ratio < 0.8))
    assert bool(clipped.any())
    assert g_ppo[clipped].abs().max() == 0.0
    bound = torch.where(adv > 0, torch.full_like(adv, 1.28), torch.full_like(adv, 0.8))
    expected = -adv * bound / mask.numel()   # |A| (1 +- eps) per token, token_mean
    assert torch.allclose(g_gppo[clipped], expected[clipped], atol=1e-6)
    assert torch.allclose(g_gppo[~clipped], g_ppo[~clipped], atol=1e-6)


def test_gppo_forward_equals_dual_clip_with_large_ratios():
    torch.manual_seed(1)
    logp = torch.empty(3, 5).uniform_(LN(0.1), LN(20.0))
    adv, mask = torch.randn(3, 5), torch.ones(3, 5)
    knobs = dict(clip_low=0.2, clip_high=0.28, clip_c=3.0)
    a, _ = POLICY_LOSSES.get("gppo")(logp, torch.zeros(3, 5), adv, mask, **knobs)
    b, _ = POLICY_LOSSES.get("dual_clip")(logp, torch.zeros(3, 5), adv, mask, **knobs)
    assert torch.allclose(a, b, atol=1e-5)


# ---- gspo / cispo --------------------------------------------------------------------------

def test_gspo_sequence_ratio_hand_numbers():
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    logp = torch.tensor([[0.0, 0.1, 0.3]])
    per_token, grad, m = grad_of("gspo", logp, torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 1.0]]), mask)
    # s = exp(mean(.1, .3)) = exp(.2) = 1.2214 > 1 + 4e-4: clipped to 1.0004, no gradient
    assert per_token[0, 1:].tolist() == A([-1.0004, -1.0004])
    assert grad.abs().max() == 0.0
    assert m["policy/clipfrac"] == A(1.0)
    assert m["policy/ratio_mean"] == A(math.exp(0.2), rel=1e-5)


def test_gspo_on_policy_gradient_is_pg():
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, 0.0]])
    adv = torch.tensor([[0.0, 2.0, 2.0], [0.0, -1.0, 0.0]])
    _, g_gspo, _ = grad_of("gspo", logp, logp, adv, mask, agg="seq_mean_token_mean")
    _, g_pg, _ = grad_of("pg", logp, logp, adv, mask, agg="seq_mean_token_mean")
    assert torch.allclose(g_gspo, g_pg)


def test_cispo_clipped_weight_hand_numbers():
    old = torch.zeros(1, 3)
    logp = torch.tensor([[LN(1.5), LN(0.1), LN(1.1)]])
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    per_token, grad, m = grad_of("cispo", logp, old, adv, torch.ones(1, 3))
    # weights: 1.5 -> 1.28 (cut), 0.1 (no lower bound), 1.1
    assert per_token.tolist()[0] == A([-1.28 * LN(1.5), -0.1 * LN(0.1), 2.2 * LN(1.1)], rel=1e-5)
    assert grad.tolist()[0] == A([-1.28 / 3, -0.1 / 3, 2.2 / 3], rel=1e-5)   # every token keeps a gradient
    assert m["policy/clipfrac"] == A(1 / 3)


# ---- nft -----------------------------------------------------------------------------------

def nft_batch():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])   # rates .5 and .25
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mask = torch.ones(8, 5)
    mask[:, 0] = 0.0
    mask[2, 3:] = 0.0
    torch.manual_seed(0)
    return rewards, groups, mask, torch.randn(8, 5)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_sum_norm"])
def test_nft_normalize1_gradient_equals_dr_grpo_on_policy(agg):
    r, g, mask, logp = nft_batch()
    rate = group_stats(r, g)[0]
    _, g_nft, _ = grad_of("nft", logp, logp, torch.zeros_like(mask), mask, agg=agg,
                          rewards=r, group_reward_mean=rate, normalize=1)
    adv = ADVANTAGES.get("dr_grpo")(r, g, mask)[0]
    _, g_pg, _ = grad_of("pg", logp, logp, adv, mask, agg=agg)
    assert torch.allclose(g_nft, g_pg, atol=1e-6)


def test_nft_normalize2_gradient_equals_grpo_on_policy():
    """Exact with GRPO's population std; rftkit's grpo uses the unbiased std (factor sqrt((G-1)/G))."""
    r, g, mask, logp = nft_batch()
    rate = group_stats(r, g)[0]
    _, g_nft, _ = grad_of("nft", logp, logp, torch.zeros_like(mask), mask,
                          rewards=r, group_reward_mean=rate, normalize=2)
    adv = ADVANTAGES.get("grpo")(r, g, mask, eps=0.0)[0]
    _, g_pg, _ = grad_of("pg", logp, logp, adv, mask)
    assert torch.allclose(g_nft, g_pg * math.sqrt(4 / 3), atol=1e-6)


def test_nft_hand_values_and_rft():
    mask = torch.ones(2, 1)
    logp = torch.tensor([[0.1], [0.1]])
    kw = dict(rewards=torch.tensor([1.0, 0.0]), group_reward_mean=torch.tensor([0.5, 0.5]))
    loss, _ = POLICY_LOSSES.get("nft")(logp, torch.zeros(2, 1), torch.zeros(2, 1), mask, **kw)
    # positive: -log R * (1 - r) = -.1 * .5; negative: -log(max((1 - .5 e^.1) / .5, 1)) = 0 (clamped)
    assert loss.flatten().tolist() == A([-0.05, 0.0], abs=1e-6)
    low = torch.tensor([[-0.1], [-0.1]])
    loss, _ = POLICY_LOSSES.get("nft")(low, torch.zeros(2, 1), torch.zeros(2, 1), mask, **kw)
    neg = -math.log((1 - 0.5 * math.exp(-0.1)) / 0.5) * 0.5
    assert loss.flatten().tolist() == A([0.05, neg], abs=1e-6)
    rft, _ = POLICY_LOSSES.get("nft")(low, torch.zeros(2, 1), torch.zeros(2, 1), mask, neg_weight=0.0, **kw)
    assert rft.flatten().tolist() == A([0.05, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="rewards"):
        POLICY_LOSSES.get("nft")(low, low, low, mask)
    with pytest.raises(ValueError, match="rate_clip must be in"):  # 0 would divide by zero on a uniform group
        POLICY_LOSSES.get("nft")(low, low, low, mask, rate_clip=0.0, **kw)


# ---- clip_cov / kl_cov ---------------------------------------------------------------------

COV_ADV = torch.tensor([[3.0, -1.0, -1.0, -1.0]])    # mean 0
COV_LOGP = torch.tensor([[1.0, 0.0, 0.0, -1.0]])     # mean 0 -> cov [3, 0, 0, 1]


def test_clip_cov_detaches_the_one_candidate():
    mask = torch.ones(1, 4)
    per_token, grad, m = grad_of("clip_cov", COV_LOGP, COV_LOGP, COV_ADV, mask)
    # only token 0 has 1 < cov < 5: its loss and gradient are zeroed; the rest is ppo_clip
    assert per_token.tolist()[0] == A([0.0, 1.0, 1.0, 1.0])
    assert grad.tolist()[0] == A([0.0, 0.25, 0.25, 0.25])
    assert m["policy/clipfrac"] == A(0.25)


def test_kl_cov_penalizes_the_top_covariance_token():
    mask = torch.ones(1, 4)
    old = COV_LOGP - torch.tensor([[0.1, 0.0, 0.0, 0.0]])
    per_token, _, m = grad_of("kl_cov", COV_LOGP, old, COV_ADV, mask)
    # k = max(1, int(.002 * 4)) = 1 token (cov 3): -A rho + |log rho|
    assert per_token.tolist()[0] == A([-3.0 * math.exp(0.1) + 0.1, 1.0, 1.0, 1.0], rel=1e-5)
    assert m["policy/kl_abs"] == A(0.025)


# ---- every loss ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_every_loss_shapes_metrics_and_zero_advantage(name):
    torch.manual_seed(2)
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    logp = torch.randn(2, 4)
    extra = {"rewards": torch.tensor([1.0, 0.0]), "group_reward_mean": torch.tensor([0.5, 0.5]),
             "offpolicy": torch.tensor([False, True])}
    extra = {k: extra[k] for k in POLICY_LOSSES.mark(name, "extra_inputs", ())}
    per_token, grad, metrics = grad_of(name, logp, logp.detach(), torch.zeros(2, 4), mask, **extra)
    assert per_token.shape == mask.shape
    for key in ("policy/clipfrac", "policy/approx_kl", "policy/ratio_mean", "policy/ratio_max"):
        assert isinstance(metrics[key], float)
    if name != "nft":   # nft reads correctness, not advantages
        assert grad.abs().max() == 0.0


# ---- KL estimators -------------------------------------------------------------------------

def test_k3_nonnegative_and_zero_iff_equal():
    torch.manual_seed(3)
    logp, ref = torch.randn(50, 7), torch.randn(50, 7)
    assert KL_ESTIMATORS.get("k3")(logp, ref).min() >= 0.0
    assert KL_ESTIMATORS.get("k3")(logp, logp).abs().max() == 0.0
    k3, low = KL_ESTIMATORS.get("k3")(logp, ref), KL_ESTIMATORS.get("low_var_kl")(logp, ref)
    assert torch.allclose(low[k3 < 10], k3[k3 < 10], atol=1e-6)   # same up to verl's clamp at 10
    assert low.max() <= 10.0


def test_kl_estimators_hand_numbers():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])   # log r = ref - logp = -.5
    assert float(KL_ESTIMATORS.get("k1")(logp, ref)) == A(0.5)
    assert float(KL_ESTIMATORS.get("k2")(logp, ref)) == A(0.125)
    assert float(KL_ESTIMATORS.get("mse")(logp, ref)) == A(0.125)
    assert float(KL_ESTIMATORS.get("abs")(ref, logp)) == A(0.5)
    assert float(KL_ESTIMATORS.get("k3")(logp, ref)) == A(math.exp(-0.5) - 1 + 0.5)
    assert float(KL_ESTIMATORS.get("low_var_kl")(torch.tensor([0.0]), torch.tensor([30.0]))) == A(10.0)
