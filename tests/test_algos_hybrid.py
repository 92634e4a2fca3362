"""SFT<->RL hybrid math (rftkit.algos.hybrid): hand-computed values and gradients.

`rftkit.algos.hybrid` is imported by a fixture, not at module level, so collecting this file
does not add `luffy` / `rl_plus` to POLICY_LOSSES while tests/test_algos_losses.py builds its
per-loss parametrization (whose extra inputs do not include `offpolicy` yet).
"""

import importlib
import math
import re

import pytest
import torch

from rftkit.algos.losses import POLICY_LOSSES
from rftkit.algos.objectives import OBJECTIVES, LossInputs

A = pytest.approx
LOG = math.log
HYBRID_OBJECTIVES = ["dft", "asft", "chord_sft", "otr", "prefix_sft", "teacher_kl"]
HYBRID_LOSSES = ["luffy", "rl_plus"]


@pytest.fixture(autouse=True)
def hybrid():
    return importlib.import_module("rftkit.algos.hybrid")


def _leaf(values):
    return torch.tensor(values, dtype=torch.float32).requires_grad_()


def _demos(probs, ref_probs=None, mask=None):
    logp = _leaf([[LOG(p) for p in row] for row in probs])
    ref = None if ref_probs is None else torch.tensor([[LOG(p) for p in row] for row in ref_probs])
    mask = torch.ones_like(logp) if mask is None else torch.tensor(mask, dtype=torch.float32)
    return LossInputs(demo_logp=logp, demo_mask=mask, demo_ref_logp=ref)


def _grad(value, leaf):
    (g,) = torch.autograd.grad(value, leaf)
    return g


def test_every_hybrid_part_is_registered_with_a_source(hybrid):
    for name in HYBRID_OBJECTIVES:
        assert re.search(r"arXiv:\d{4}\.\d{4,5}", OBJECTIVES.get(name).__doc__), name
    for name in HYBRID_LOSSES:
        assert re.search(r"arXiv:\d{4}\.\d{4,5}", POLICY_LOSSES.get(name).__doc__), name
        assert POLICY_LOSSES.mark(name, "extra_inputs") == ("offpolicy",)
    assert OBJECTIVES.needs("asft") == {"demos", "ref_demos"}
    assert OBJECTIVES.needs("teacher_kl") == {"rollout", "teacher"}
    assert OBJECTIVES.needs("prefix_sft") == {"rollout"}
    assert OBJECTIVES.needs("otr") == {"demos", "demo_dist"}
    for fn in (hybrid.chord_mu, hybrid.srft_weights, hybrid.sasr_choose, hybrid.amft_update,
               hybrid.amft_meta_gradient):
        assert re.search(r"arXiv:\d{4}\.\d{4,5}", fn.__doc__), fn.__name__


def test_dft_gradient_is_p_times_the_nll_gradient_per_token():
    probs = [[0.5, 0.9, 0.1], [0.3, 0.7, 0.2]]
    inp = _demos(probs, mask=[[1, 1, 1], [1, 1, 0]])
    value, m = OBJECTIVES.get("dft")(inp)
    g_dft = _grad(value, inp.demo_logp)
    g_nll = _grad(OBJECTIVES.get("sft")(inp)[0], inp.demo_logp)
    assert torch.allclose(g_dft, torch.tensor(probs) * g_nll)
    assert value.item() == A(-(0.5 * LOG(0.5) + 0.9 * LOG(0.9) + 0.1 * LOG(0.1) + 0.3 * LOG(0.3) + 0.7 * LOG(0.7)) / 5)
    assert m["mix/sft_token_weight_mean"] == A((0.5 + 0.9 + 0.1 + 0.3 + 0.7) / 5)


def test_chord_sft_weights_tokens_by_p_one_minus_p():
    inp = _demos([[0.5, 0.9, 0.1]])
    value, m = OBJECTIVES.get("chord_sft")(inp)
    # phi = 0.25, 0.09, 0.09
    assert value.item() == A((0.25 * LOG(2) + 0.09 * -LOG(0.9) + 0.09 * -LOG(0.1)) / 3)
    assert m["mix/sft_token_weight_mean"] == A(0.43 / 3)
    assert torch.allclose(_grad(value, inp.demo_logp), torch.tensor([[-0.25, -0.09, -0.09]]) / 3)
    # cutoff 0.8: the p = 0.9 token keeps its weight in the value but gets no gradient
    inp = _demos([[0.5, 0.9, 0.1]])
    value, _ = OBJECTIVES.get("chord_sft")(inp, cutoff_prob=0.8)
    assert torch.allclose(_grad(value, inp.demo_logp), torch.tensor([[-0.25, 0.0, -0.09]]) / 3)


def test_asft_reduces_to_dft_when_policy_equals_reference():
    probs = [[0.5, 0.9, 0.1], [0.3, 0.7, 0.2]]
    a, d = _demos(probs, ref_probs=probs), _demos(probs)
    va, ma = OBJECTIVES.get("asft")(a)
    vd, _ = OBJECTIVES.get("dft")(d)
    assert va.item() == A(vd.item(), abs=1e-6) and ma["mix/asft_anchor"] == A(0.0, abs=1e-6)
    assert torch.allclose(_grad(va, a.demo_logp), _grad(vd, d.demo_logp), atol=1e-6)


def test_asft_anchor_hand_value_and_logit_gradient(hybrid):
    # p = 0.5, p_ref = 0.25: KL(Bern(.25) || Bern(.5)) = .25 ln(.5) + .75 ln(1.5)
    inp = _demos([[0.5]], ref_probs=[[0.25]])
    value, m = OBJECTIVES.get("asft")(inp, kl_weight=1.0)
    kl = 0.25 * LOG(0.5) + 0.75 * LOG(1.5)
    assert m["mix/asft_anchor"] == A(kl, rel=1e-5)
    assert value.item() == A(-0.5 * LOG(0.5) + kl, rel=1e-5)
    # the anchor's gradient on the demo token's logit is p - p_ref, as for the full KL(p_ref || p)
    z = _leaf([0.3, -0.2, 1.1])
    logp = torch.log_softmax(z, 0)[0]
    ref = torch.log_softmax(torch.tensor([1.0, 0.0, -1.0]), 0)[0]
    g = _grad(hybrid.binary_kl(logp, ref), z)
    assert g[0].item() == A((logp.exp() - ref.exp()).item(), rel=1e-5)


def _rollout(logp, old_logp, adv, offpolicy=None):
    logp = _leaf(logp)
    return LossInputs(logp=logp, old_logp=torch.tensor(old_logp), advantages=torch.tensor(adv),
                      mask=torch.ones_like(logp), offpolicy=offpolicy)


def test_luffy_on_policy_rows_are_ppo_clip_and_off_rows_are_shaped():
    lp, old = [[LOG(0.5)] * 2, [LOG(0.5)] * 2], [[LOG(0.1)] * 2, [LOG(0.1)] * 2]  # ratio 5: clipped
    inp = _rollout(lp, old, [[2.0, 2.0], [2.0, 2.0]], offpolicy=torch.tensor([False, True]))
    loss, m = POLICY_LOSSES.get("luffy")(inp.logp, inp.old_logp, inp.advantages, inp.mask, inp.offpolicy)
    ppo, _ = POLICY_LOSSES.get("ppo_clip")(inp.logp, inp.old_logp, inp.advantages, inp.mask)
    assert torch.equal(loss[0], ppo[0])
    assert loss[1].tolist() == A([-2 * 0.5 / 0.6] * 2)  # -A f(p), f(p) = p / (p + 0.1)
    g = _grad(loss.sum(), inp.logp)
    assert g[0].tolist() == [0.0, 0.0]  # the clipped on-policy ratio has no gradient
    assert g[1].tolist() == A([-2 * 0.1 * 0.5 / 0.6 ** 2] * 2)  # -A gamma p / (p + gamma)^2
    assert m["mix/off_token_frac"] == A(0.5) and m["mix/off_weight_mean"] == A(0.5 / 0.6)
    assert m["policy/clipfrac"] == A(1.0)  # over on-policy tokens only


def test_luffy_through_the_policy_objective_and_without_demos():
    lp, old = [[-0.7, -0.2], [-1.0, -0.4]], [[-0.6, -0.3], [-1.2, -0.3]]
    inp = _rollout(lp, old, [[1.0, 1.0], [-0.5, -0.5]], offpolicy=torch.tensor([False, True]))
    value, m = OBJECTIVES.get("policy")(inp, loss="luffy", loss_params={"gamma": 0.1})
    per_token, _ = POLICY_LOSSES.get("luffy")(inp.logp, inp.old_logp, inp.advantages, inp.mask, inp.offpolicy)
    assert value.item() == A(per_token.mean().item()) and "mix/off_prob_mean" in m
    inp.offpolicy = None  # no demonstration rows in this micro-batch: exactly ppo_clip
    loss, _ = POLICY_LOSSES.get("luffy")(inp.logp, inp.old_logp, inp.advantages, inp.mask, None)
    assert torch.equal(loss, POLICY_LOSSES.get("ppo_clip")(inp.logp, inp.old_logp, inp.advantages, inp.mask)[0])
    unclipped, _ = POLICY_LOSSES.get("luffy")(inp.logp, inp.old_logp, inp.advantages, inp.mask, on_clip=False)
    assert torch.allclose(unclipped, -inp.advantages * (inp.logp - inp.old_logp).exp())


def test_rl_plus_off_policy_rows_hand_value():
    inp = _rollout([[LOG(0.5)]], [[LOG(0.4)]], [[1.0]], offpolicy=torch.tensor([True]))
    loss, m = POLICY_LOSSES.get("rl_plus")(inp.logp, inp.old_logp, inp.advantages, inp.mask, inp.offpolicy)
    ratio = 2 * 0.5 / (0.4 + 0.5 * (0.4 + 1))  # 2 pi / (pi_old + (pi_old + 1) / 2)
    assert loss.item() == A(-ratio * 0.5 ** 0.5)  # A (1 - sg(pi))^0.5
    assert m["mix/off_weight_mean"] == A(ratio)
    assert _grad(loss.sum(), inp.logp).item() == A(-ratio * 0.5 ** 0.5)  # d ratio / d log pi = ratio


def test_teacher_kl_is_zero_at_the_teacher_and_k3_nonnegative():
    torch.manual_seed(0)
    logp = _leaf(torch.randn(3, 5).tolist())
    inp = LossInputs(logp=logp, mask=torch.ones(3, 5), teacher_logp=logp.detach().clone(),
                     rewards=torch.tensor([1.0, 0.0, 0.0]))
    for est in ("k1", "k2", "k3"):
        assert OBJECTIVES.get("teacher_kl")(inp, estimator=est)[0].item() == A(0.0, abs=1e-7)
    inp.teacher_logp = torch.randn(3, 5)
    assert OBJECTIVES.get("teacher_kl")(inp, estimator="k3")[0].item() > 0
    value, m = OBJECTIVES.get("teacher_kl")(inp)  # k2: gradient (log pi - log pi_T) / n
    assert m["loss/teacher_kl"] == A(value.item())
    assert torch.allclose(_grad(value, logp), (logp.detach() - inp.teacher_logp) / 15)
    value, _ = OBJECTIVES.get("teacher_kl")(inp, only_incorrect=True)  # row 0 is correct: no KD
    assert _grad(value, logp)[0].abs().sum().item() == 0.0


def _prefix_inputs():
    logp = _leaf([[-0.5, -1.0, -0.3, -0.2], [-0.4, -0.6, -0.9, -0.1]])
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    prefix = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    adv = torch.tensor([[0.0, 0.0, 1.5, 1.5], [-1.0, -1.0, -1.0, -1.0]])
    return LossInputs(logp=logp, old_logp=logp.detach().clone(), advantages=adv, mask=mask,
                      entropy=torch.tensor([[0.2, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]]), prefix_mask=prefix)


def test_prefix_sft_only_touches_prefix_tokens():
    inp = _prefix_inputs()
    value, m = OBJECTIVES.get("prefix_sft")(inp, entropy_top=None)
    assert value.item() == A(-1.5)  # -A_row pi / sg(pi) on the 2 prefix tokens of row 0
    assert torch.allclose(_grad(value, inp.logp), torch.tensor([[-0.75, -0.75, 0, 0], [0, 0, 0, 0]]))
    value, m = OBJECTIVES.get("prefix_sft")(_prefix_inputs())  # top 20 %: only the high-entropy one
    assert m["mix/prefix_grad_frac"] == A(0.5) and value.item() == A(-0.75)
    inp = _prefix_inputs()
    value, _ = OBJECTIVES.get("prefix_sft")(inp, weighting="nll", entropy_top=None)
    assert value.item() == A(0.75)
    assert torch.allclose(_grad(value, inp.logp), torch.tensor([[-0.5, -0.5, 0, 0], [0, 0, 0, 0]]))
    inp.prefix_mask = None
    assert OBJECTIVES.get("prefix_sft")(inp)[0].item() == 0.0


def test_chord_mu_schedule(hybrid):
    def mu(s):
        return hybrid.chord_mu(s, warmup_steps=10, decay_steps=20, peak=0.9, valley=0.05)

    assert [mu(0), mu(5), mu(10), mu(20), mu(30), mu(99)] == A([0.0, 0.45, 0.9, 0.475, 0.05, 0.05])
    assert hybrid.chord_mu(0) == 0.1  # Trinity default: constant 0.1 (CHORD-phi)


def test_srft_sasr_amft_rules(hybrid):
    assert hybrid.srft_weights(0.0) == A((0.5, 0.1))
    assert hybrid.srft_weights(1.0) == A((0.5 / math.e, 0.1 * math.e))
    assert hybrid.sasr_choose(2.0, 2.0, 1.0, 1.0, 0.4) == (True, 0.5)
    assert hybrid.sasr_choose(2.0, 2.0, 1.0, 1.0, 0.6) == (False, 0.5)
    assert hybrid.sasr_choose(4.0, 2.0, 1.0, 1.0, 0.0)[1] == A(1 / (1 + math.exp(-1)))
    assert hybrid.amft_update(0.5, 1.0, 0.5) == A(0.5 - 5e-4 * 0.5)
    assert hybrid.amft_update(0.95, 0.0, 100.0) == 0.95 and hybrid.amft_update(0.1, 1e4, 0.0) == 0.05
    assert hybrid.amft_update(0.5, 0.5, 0.5, meta_gradient=100.0) == A(0.51)
    g = hybrid.amft_meta_gradient([torch.ones(2)], [3 * torch.ones(2)], [torch.ones(2)], policy_lr=0.1)
    assert g == A(-0.4)

