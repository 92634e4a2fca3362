"""Preference and offline objectives (rftkit.algos.preference, rftkit.algos.offline) against numbers
computed by hand: DPO / cDPO, IPO, SimPO, Bradley-Terry, pointwise reward-model losses, CoPG, A-LoL,
C-RLFT and the demonstration KL; gradient signs; padding; and micro-batches that sum to the step."""

import math

import pytest
import torch

from rftkit.algos.objectives import OBJECTIVES, LossInputs

A = pytest.approx
LOG, EXP = math.log, math.exp


def _softplus(x):
    """-log sigmoid(-x) = log(1 + e^x)."""
    return LOG(1.0 + EXP(x))


def _leaf(values):
    return torch.tensor(values, dtype=torch.float32).requires_grad_()


def _pair(pad_logp=-7.0, pad_ref=-0.3, rewards=None, grad=True):
    """One pair, T = 2. Chosen: logp [-1, -2], ref [-1.5, -2.5]; rejected: logp [-3, pad], ref [-2, pad],
    the second rejected token is padding (mask 0).
    Summed log-ratios: chosen (-1 - 2) - (-1.5 - 2.5) = -3 + 4 = 1; rejected -3 - (-2) = -1; h = 2.
    Averaged: chosen 1 / 2 = 0.5; rejected -1 / 1 = -1; h_avg = 1.5."""
    logp = [[[-1.0, -2.0], [-3.0, pad_logp]]]
    ref = torch.tensor([[[-1.5, -2.5], [-2.0, pad_ref]]])
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    return LossInputs(pair_logp=_leaf(logp) if grad else torch.tensor(logp), pair_ref_logp=ref, pair_mask=mask,
                      pair_rewards=None if rewards is None else torch.tensor([rewards]))


def _bind(name, **params):
    return OBJECTIVES.bind(name, params)


# ---------------------------------------------------------------------------------------------- DPO


def test_dpo_hand_value_and_metrics():
    # beta h = 0.1 * 2 = 0.2; loss = -log sigmoid(0.2) = log(1 + e^-0.2)
    loss, m = _bind("dpo", beta=0.1)(_pair())
    assert float(loss.detach()) == A(_softplus(-0.2), abs=1e-6)
    assert m["loss/dpo"] == A(_softplus(-0.2), abs=1e-6)
    assert m["pref/margin"] == A(2.0, abs=1e-6)
    assert m["pref/accuracy"] == 1.0
    # rewards: beta * log-ratio of each side: 0.1 * 1 and 0.1 * -1
    assert m["pref/chosen_reward"] == A(0.1, abs=1e-6)
    assert m["pref/rejected_reward"] == A(-0.1, abs=1e-6)


def test_cdpo_label_smoothing_hand_value():
    # eps = 0.2: 0.8 * -log sigmoid(0.2) + 0.2 * -log sigmoid(-0.2) = 0.8 log(1 + e^-0.2) + 0.2 log(1 + e^0.2)
    loss, _ = _bind("dpo", beta=0.1, label_smoothing=0.2)(_pair())
    assert float(loss.detach()) == A(0.8 * _softplus(-0.2) + 0.2 * _softplus(0.2), abs=1e-6)


def test_dpo_gradient_signs_and_padding():
    inp = _pair()
    loss, _ = _bind("dpo", beta=0.1)(inp)
    loss.backward()
    g = inp.pair_logp.grad
    # d loss / d logp_chosen_t = -beta sigmoid(-beta h) = -0.1 * sigmoid(-0.2) = -0.1 / (1 + e^0.2)
    assert g[0, 0].tolist() == A([-0.1 / (1 + EXP(0.2))] * 2, abs=1e-6)
    assert float(g[0, 1, 0]) == A(0.1 / (1 + EXP(0.2)), abs=1e-6)
    assert float(g[0, 1, 1]) == 0.0  # padding gets no gradient
    assert bool((g[0, 0] < 0).all()) and float(g[0, 1, 0]) > 0


def test_dpo_padding_values_do_not_change_the_loss():
    fn = _bind("dpo", beta=0.1)
    a = float(fn(_pair())[0].detach())
    b = float(fn(_pair(pad_logp=-50.0, pad_ref=3.0))[0].detach())
    assert a == b


def test_dpo_sgd_step_raises_chosen_and_lowers_rejected():
    """A tiny policy: one logit row per position (3 positions, vocabulary 4). Chosen tokens 0, 1 at
    positions 0, 1; rejected token 2 at position 2 (its second slot is padding)."""
    theta = torch.zeros(3, 4, requires_grad=True)
    ref = torch.full((1, 2, 2), LOG(0.25))
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])

    def logps():
        lsm = torch.log_softmax(theta, -1)
        chosen = torch.stack([lsm[0, 0], lsm[1, 1]])
        rejected = torch.stack([lsm[2, 2], torch.zeros(())])
        return torch.stack([chosen, rejected])[None]

    before = logps().detach()
    loss, _ = _bind("dpo", beta=0.1)(LossInputs(pair_logp=logps(), pair_ref_logp=ref, pair_mask=mask))
    loss.backward()
    with torch.no_grad():
        theta -= 1.0 * theta.grad
    after = logps().detach()
    assert float(after[0, 0].sum()) > float(before[0, 0].sum())
    assert float(after[0, 1, 0]) < float(before[0, 1, 0])


def test_dpo_needs_the_reference_and_checks_knobs():
    inp = _pair()
    inp.pair_ref_logp = None
    with pytest.raises(ValueError, match="pair_ref_logp"):
        _bind("dpo")(inp)
    with pytest.raises(ValueError):
        _bind("dpo", label_smoothing=0.5)(_pair())
    with pytest.raises(ValueError):
        _bind("dpo", beta=0.0)(_pair())


# ---------------------------------------------------------------------------------------------- IPO


def test_ipo_hand_value_uses_length_averaged_log_ratios():
    # h_avg = 0.5 - (-1) = 1.5. beta 0.25: 1 / (2 beta) = 2 -> (1.5 - 2)^2 = 0.25
    loss, m = _bind("ipo", beta=0.25)(_pair())
    assert float(loss.detach()) == A(0.25, abs=1e-6)
    assert m["pref/margin"] == A(1.5, abs=1e-6)
    # beta 0.1: (1.5 - 5)^2 = 12.25 (the summed h = 2 would give 9)
    assert float(_bind("ipo", beta=0.1)(_pair())[0].detach()) == A(12.25, abs=1e-5)


# -------------------------------------------------------------------------------------------- SimPO


def test_simpo_hand_value_without_a_reference():
    # avg_w = (-1 - 2) / 2 = -1.5, avg_l = -3 / 1 = -3; beta 2, gamma 0.5:
    # 2 * -1.5 - 2 * -3 - 0.5 = -3 + 6 - 0.5 = 2.5; loss = -log sigmoid(2.5) = log(1 + e^-2.5)
    inp = _pair()
    inp.pair_ref_logp = None
    loss, m = _bind("simpo", beta=2.0, gamma=0.5)(inp)
    assert float(loss.detach()) == A(_softplus(-2.5), abs=1e-6)
    assert m["pref/margin"] == A(3.0, abs=1e-6)
    assert m["pref/chosen_reward"] == A(-3.0, abs=1e-6)
    assert m["pref/rejected_reward"] == A(-6.0, abs=1e-6)


# ------------------------------------------------------------------------------------ Bradley-Terry


def _scores():
    return _leaf([[2.0, 0.5], [0.0, 1.0]])


def test_bradley_terry_hand_value_with_margin_and_center():
    # pair 1: diff 1.5, -log sigmoid(1.5 - 0.5) = log(1 + e^-1); center 0.01 * (2 + 0.5)^2 = 0.0625
    # pair 2: diff -1, -log sigmoid(-1 - 0.5) = log(1 + e^1.5); center 0.01 * (0 + 1)^2 = 0.01
    s = _scores()
    inp = LossInputs(pair_scores=s, pair_mask=torch.ones(2, 2, 1))
    loss, m = _bind("bradley_terry", margin=0.5, center=0.01)(inp)
    want = (_softplus(-1.0) + 0.0625 + _softplus(1.5) + 0.01) / 2
    assert float(loss.detach()) == A(want, abs=1e-6)
    assert m["rm/accuracy"] == 0.5
    assert m["rm/margin"] == A((1.5 - 1.0) / 2, abs=1e-6)
    assert m["rm/chosen_score"] == A(1.0, abs=1e-6)
    assert m["rm/rejected_score"] == A(0.75, abs=1e-6)
    # plain: (log(1 + e^-1.5) + log(1 + e^1)) / 2
    plain, _ = _bind("bradley_terry")(LossInputs(pair_scores=_scores(), pair_mask=torch.ones(2, 2, 1)))
    assert float(plain.detach()) == A((_softplus(-1.5) + _softplus(1.0)) / 2, abs=1e-6)


# ------------------------------------------------------------------------------------- rm_pointwise


def test_rm_pointwise_bce_and_mse_hand_values():
    rewards = torch.tensor([1.0, 0.0])
    # bce: row 1 logit 0, target 1: -log sigmoid(0) = log 2; row 2 logit 2, target 0: -log(1 - sigmoid(2)) =
    # log(1 + e^2); mean over 2 rows
    loss, m = _bind("rm_pointwise", loss="bce")(LossInputs(scores=_leaf([0.0, 2.0]), rewards=rewards))
    assert float(loss.detach()) == A((LOG(2.0) + _softplus(2.0)) / 2, abs=1e-6)
    assert m["rm/label_accuracy"] == 0.0  # 0 > 0 is False vs target 1; 2 > 0 vs target 0
    # mse: ((0 - 1)^2 + (2 - 0)^2) / 2 = 2.5
    loss, _ = _bind("rm_pointwise", loss="mse")(LossInputs(scores=_leaf([0.0, 2.0]), rewards=rewards))
    assert float(loss.detach()) == A(2.5, abs=1e-6)


def test_rm_pointwise_bce_rejects_rewards_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _bind("rm_pointwise", loss="bce")(LossInputs(scores=_leaf([0.0, 2.0]), rewards=torch.tensor([1.5, 0.0])))
    # mse takes them: ((0 - 1.5)^2 + (2 - 0)^2) / 2 = (2.25 + 4) / 2
    loss, _ = _bind("rm_pointwise", loss="mse")(LossInputs(scores=_leaf([0.0, 2.0]),
                                                           rewards=torch.tensor([1.5, 0.0])))
    assert float(loss.detach()) == A(3.125, abs=1e-6)


# --------------------------------------------------------------------------------------------- CoPG


def test_copg_hand_value_and_gradient_is_minus_the_r_beta_difference():
    # h = 2, R_c - R_r = 1 - 0 = 1, beta 0.1: (0.1 / 2) * (2 - 1 / 0.1)^2 = 0.05 * 64 = 3.2
    inp = _pair(rewards=[1.0, 0.0])
    loss, m = _bind("copg", beta=0.1)(inp)
    assert float(loss.detach()) == A(3.2, abs=1e-5)
    assert m["pref/margin"] == A(2.0, abs=1e-6)
    loss.backward()
    g = inp.pair_logp.grad
    # d loss / d log pi(y_w) = beta h - (R_c - R_r) = -((R_c - R_r) - beta h) = -(1 - 0.2) = -0.8,
    # the same at every trained token of the chosen side (the sequence log-prob is their sum)
    assert g[0, 0].tolist() == A([-0.8, -0.8], abs=1e-6)
    assert float(g[0, 1, 0]) == A(0.8, abs=1e-6)  # rejected: the opposite
    assert float(g[0, 1, 1]) == 0.0


def test_copg_with_quarter_rewards_is_ipo_on_summed_log_probs():
    # rewards +1/4, -1/4: (R_c - R_r) / beta = 1 / (2 beta): (beta / 2)(h - 1 / (2 beta))^2
    # beta 0.1, h = 2: 0.05 * (2 - 5)^2 = 0.45
    loss, _ = _bind("copg", beta=0.1)(_pair(rewards=[0.25, -0.25]))
    assert float(loss.detach()) == A(0.45, abs=1e-6)
    # one token per side: IPO's averaged log-ratios are the sums, so copg = (beta / 2) * ipo (tau = beta)
    one = LossInputs(pair_logp=_leaf([[[-1.0], [-3.0]]]), pair_ref_logp=torch.tensor([[[-1.5], [-2.0]]]),
                     pair_mask=torch.ones(1, 2, 1), pair_rewards=torch.tensor([[0.25, -0.25]]))
    # h = 0.5 - (-1) = 1.5: ipo = (1.5 - 5)^2 = 12.25, copg = 0.05 * 12.25 = 0.6125
    copg = float(_bind("copg", beta=0.1)(one)[0].detach())
    ipo = float(_bind("ipo", beta=0.1)(one)[0].detach())
    assert copg == A(0.6125, abs=1e-6)
    assert copg == A(0.05 * ipo, abs=1e-6)


# -------------------------------------------------------------------------------------------- A-LoL


def _alol_rows():
    """Row 0: logp [-0.5, -1.0], ref [-0.5 - log 3, -1.0]: sequence ratio exp(log 3) = 3, advantage 2.
    Row 1: logp [-2.0, pad], advantage -1 (negative: dropped)."""
    logp = _leaf([[-0.5, -1.0], [-2.0, -9.0]])
    ref = torch.tensor([[-0.5 - LOG(3.0), -1.0], [-1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([[2.0, 2.0], [-1.0, 0.0]])
    return LossInputs(logp=logp, ref_logp=ref, mask=mask, advantages=adv)


def test_alol_sequence_ratio_is_clipped_and_negative_rows_drop():
    # w = clip(3, 0.1, 1.9) = 1.9; loss = (2 * 1.9 * (0.5 + 1.0) + 0) / 2 rows = 2.85
    inp = _alol_rows()
    loss, m = _bind("alol", clip=0.9, ratio="sequence")(inp)
    assert float(loss.detach()) == A(2.85, abs=1e-5)
    assert m["alol/kept_rows"] == 0.5
    loss.backward()
    # d / d logp of row 0 tokens: -A+ w / rows = -2 * 1.9 / 2 = -1.9; row 1 contributes nothing
    assert inp.logp.grad[0].tolist() == A([-1.9, -1.9], abs=1e-6)
    assert inp.logp.grad[1].tolist() == [0.0, 0.0]


def test_alol_ratio_none_and_token():
    # none: w = 1: (2 * 1 * 1.5) / 2 = 1.5
    assert float(_bind("alol", ratio="none")(_alol_rows())[0].detach()) == A(1.5, abs=1e-6)
    # token: w_t = clip(exp(logp_t - ref_t)) = [clip(3) = 1.9, exp(0) = 1]: 2 * (1.9 * 0.5 + 1 * 1.0) / 2 = 1.95
    assert float(_bind("alol", ratio="token")(_alol_rows())[0].detach()) == A(1.95, abs=1e-5)


def test_alol_small_ratio_clips_from_below():
    # sequence ratio exp(log 0.05) = 0.05 -> clip to 1 - 0.9 = 0.1; loss = 1 * 0.1 * 1 / 1 = 0.1
    inp = LossInputs(logp=_leaf([[-1.0]]), ref_logp=torch.tensor([[-1.0 - LOG(0.05)]]), mask=torch.ones(1, 1),
                     advantages=torch.ones(1, 1))
    assert float(_bind("alol", clip=0.9)(inp)[0].detach()) == A(0.1, abs=1e-6)


# ------------------------------------------------------------------------------------ C-RLFT / KL


def test_crlft_weighted_nll_normalized_by_total_weight():
    # demo 0: logp [-1, -2], weight 1, both tokens; demo 1: logp [-3, pad], weight 0.1, one token.
    # sum w * -logp = 1 * (1 + 2) + 0.1 * 3 = 3.3; total weight = 1 * 2 + 0.1 * 1 = 2.1
    inp = LossInputs(demo_logp=_leaf([[-1.0, -2.0], [-3.0, -8.0]]), demo_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
                     demo_weights=torch.tensor([1.0, 0.1]))
    loss, m = _bind("crlft")(inp)
    assert float(loss.detach()) == A(3.3 / 2.1, abs=1e-6)
    assert m["loss/crlft"] == A(3.3 / 2.1, abs=1e-6)


def test_demo_kl_k3_on_one_token():
    # ref - logp = -1.5 - (-1) = -0.5: exp(-0.5) - (-0.5) - 1
    inp = LossInputs(demo_logp=_leaf([[-1.0]]), demo_ref_logp=torch.tensor([[-1.5]]), demo_mask=torch.ones(1, 1))
    loss, m = _bind("demo_kl")(inp)
    assert float(loss.detach()) == A(EXP(-0.5) + 0.5 - 1.0, abs=1e-6)
    assert m["policy/demo_kl"] == A(EXP(-0.5) + 0.5 - 1.0, abs=1e-6)


# --------------------------------------------------------------------------------- grad accumulation


def _pairs_batch(p=5, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(p, 2, t, generator=g) * 3
    ref = -torch.rand(p, 2, t, generator=g) * 3
    lengths = torch.randint(1, t + 1, (p, 2), generator=g)
    mask = (torch.arange(t)[None, None, :] < lengths[..., None]).float()
    rewards = torch.rand(p, 2, generator=g)
    scores = torch.randn(p, 2, generator=g)
    return logp, ref, mask, rewards, scores


@pytest.mark.parametrize("name,params", [("dpo", {"beta": 0.1, "label_smoothing": 0.1}), ("ipo", {"beta": 0.5}),
                                         ("simpo", {}), ("copg", {"beta": 0.2}),
                                         ("bradley_terry", {"margin": 0.1, "center": 0.05})])
@pytest.mark.parametrize("cuts", [[0, 2, 5], [0, 1, 5], [0, 1, 3, 5]], ids=lambda c: "-".join(map(str, c)))
def test_pair_micro_batches_sum_to_the_whole_step(name, params, cuts):
    logp, ref, mask, rewards, scores = _pairs_batch()
    fn = OBJECTIVES.bind(name, params)

    def inputs(lo, hi, whole):
        return LossInputs(pair_logp=logp[lo:hi].clone().requires_grad_(), pair_ref_logp=ref[lo:hi],
                          pair_mask=mask[lo:hi], pair_rewards=rewards[lo:hi],
                          pair_scores=scores[lo:hi].clone().requires_grad_(), whole=whole)

    full = float(fn(inputs(0, 5, None))[0].detach())
    whole = LossInputs(pair_mask=mask)
    parts = [float(fn(inputs(lo, hi, whole))[0].detach()) for lo, hi in zip(cuts, cuts[1:])]
    assert sum(parts) == A(full, abs=1e-5)
    assert not math.isclose(parts[0], full, abs_tol=1e-6)  # the split really changed something


def test_row_and_demo_objectives_micro_batches_sum_to_the_whole_step():
    """alol and rm_pointwise normalize by the whole step's rows, crlft by its total demo weight."""
    g = torch.Generator().manual_seed(1)
    logp, ref = -torch.rand(4, 3, generator=g), -torch.rand(4, 3, generator=g)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -0.5, 2.0, 0.3])[:, None] * mask
    weights, rewards, scores = torch.tensor([1.0, 0.1, 0.1, 1.0]), torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.randn(4)

    def inputs(lo, hi, whole):
        return LossInputs(logp=logp[lo:hi], ref_logp=ref[lo:hi], mask=mask[lo:hi], advantages=adv[lo:hi],
                          rewards=rewards[lo:hi], scores=scores[lo:hi], demo_logp=logp[lo:hi],
                          demo_mask=mask[lo:hi], demo_weights=weights[lo:hi], whole=whole)

    whole = LossInputs(mask=mask, rewards=rewards, demo_mask=mask, demo_weights=weights)
    for name in ("alol", "crlft", "rm_pointwise"):
        fn = OBJECTIVES.bind(name, {})
        full = float(fn(inputs(0, 4, None))[0])
        parts = [float(fn(inputs(lo, hi, whole))[0]) for lo, hi in ((0, 1), (1, 4))]
        assert sum(parts) == A(full, abs=1e-5), name
