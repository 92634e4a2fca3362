"""Offline-RL objectives of the seeds: A-LoL, CoPG, C-RLFT, and SuperHF's KL prior.

    ObjectiveFn(inp: LossInputs, *, knobs) -> (scalar loss, metrics dict of floats)

Offline data here is what the stage's rollouts sample when `rollout.policy: reference` (the
frozen starting model draws the completions, so the data's distribution never moves with
the policy), a preference dataset, or mixed-quality demonstrations. Notation as in
`rftkit.algos.preference`: rho(y) = log pi(y|x) - log pi_ref(y|x) summed over the completion.
Registered on import of `rftkit.algos`; formulas, sources and knobs in docs/preference.md.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rftkit.algos.hybrid_sft import need as _need
from rftkit.algos.kl import KL_ESTIMATORS, KLName
from rftkit.algos.losses import AggName
from rftkit.algos.objectives import LossInputs, aggregate, demo_mask_of, objective
from rftkit.algos.preference import pair_mean, seq_logp


def _rows_of_whole(inp: LossInputs) -> int:
    mask = inp.whole.mask if inp.whole is not None and inp.whole.mask is not None else inp.mask
    return max(int(mask.shape[0]), 1)


@objective("alol", needs={"rollout", "ref"})
def alol_objective(inp: LossInputs, *, clip: float = 0.9,
                   ratio: Literal["sequence", "token", "none"] = "sequence") -> tuple[Tensor, dict]:
    """A-LoL, Advantage-Leftover-Lunch offline policy gradient (Baheti et al. 2023,
    arXiv:2305.14718; checked against abaheti95/LoL-RL `lolrl_qlora_llama_hh.py`):

        loss = mean_rows[ A+ * clip(w, 1 - clip, 1 + clip) * sum_t -log pi(y_t) ],  A+ = max(A, 0)

    The whole completion is one action: A is the row's advantage (constant over its tokens; use
    `dr_grpo`, A = R - mean of the prompt's group, i.e. R - V_ref(x) estimated from the
    reference's own samples where the paper trains a value head), rows with A <= 0 are dropped.
    ratio "sequence": w = pi(y|x) / pi_ref(y|x), detached (the paper's A-LoL, code `a_lol`);
    "token": per-token detached ratios clipped each (the code's `a_lol_seq`); "none": w = 1
    (`a_lol_ref_free`). clip 0.9 is the released default: w in [0.1, 1.9].
    """
    _need(inp, ("logp", "ref_logp", "advantages", "mask"), "alol")
    mask = inp.mask
    adv = (inp.advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # the row's (constant) advantage
    pos = adv.clamp(min=0.0)
    nll = -(inp.logp * mask)
    with torch.no_grad():
        if ratio == "sequence":
            w = seq_logp(inp.logp - inp.ref_logp, mask).exp().clamp(1 - clip, 1 + clip)[:, None]
        elif ratio == "token":
            w = ((inp.logp - inp.ref_logp) * mask).exp().clamp(1 - clip, 1 + clip)
        else:
            w = torch.ones_like(mask)
    per_row = pos * (w * nll).sum(-1)
    loss = per_row.sum() / _rows_of_whole(inp)
    kept = (pos > 0) & (mask.sum(-1) > 0)
    return loss, {"loss/alol": float(loss.detach()), "alol/kept_rows": float(kept.float().mean()),
                  "alol/weight_mean": float(w.mean()) if w.numel() else 1.0}


@objective("copg", needs={"pairs", "ref_pairs"})
def copg_objective(inp: LossInputs, *, beta: float = 0.1) -> tuple[Tensor, dict]:
    """CoPG, contrastive policy gradient (Flet-Berliac et al. 2024, arXiv:2406.19185, eq. 7-9):

        loss = mean_pairs (beta / 2) * (h - (R(y) - R(y')) / beta)^2,  h = rho(y) - rho(y')

    the paper's objective l = (R(y) - R(y'))(a - b) - (beta/2)(a - b)^2 (maximized; a, b the
    log-ratios) up to a constant, so its gradient is the paper's (R_beta(y) - R_beta(y')) grad
    log pi(y) + (R_beta(y') - R_beta(y)) grad log pi(y'), R_beta = R - beta rho. Off-policy pairs
    with any sequence rewards, no importance weights; with rewards +-1/4 it is IPO (property 3).
    Reads pair_rewards [P, 2]. No official code was found; the closed form is our algebra.
    """
    _need(inp, ("pair_logp", "pair_ref_logp", "pair_mask", "pair_rewards"), "copg")
    if beta <= 0:
        raise ValueError(f"copg: beta must be > 0, got {beta}")
    rho = seq_logp(inp.pair_logp, inp.pair_mask) - seq_logp(inp.pair_ref_logp, inp.pair_mask)
    h = rho[:, 0] - rho[:, 1]
    d_reward = (inp.pair_rewards[:, 0] - inp.pair_rewards[:, 1]).float()
    loss = pair_mean(0.5 * beta * (h - d_reward / beta) ** 2, inp)
    return loss, {"loss/copg": float(loss.detach()),
                  "pref/margin": float(h.detach().mean()) if h.numel() else 0.0,
                  "pref/accuracy": float((h.detach() * d_reward > 0).float().mean()) if h.numel() else 0.0}


@objective("crlft", needs={"demos"})
def crlft_objective(inp: LossInputs) -> tuple[Tensor, dict]:
    """C-RLFT, class-conditioned weighted SFT (OpenChat, Wang et al. 2023, arXiv:2309.11235;
    checked against imoneoi/openchat `weighted_cross_entropy` and train.py):

        loss = sum_tokens w_c * -log pi(y_t | x, c) / sum_tokens w_c

    each demonstration's tokens weighted by its class reward w_c (demo_weights [M]: the `crlft`
    demonstration source gives expert demos 1 and sub-optimal ones a smaller weight), normalized
    by the total weight of the whole step's tokens, as the released code does. The class c is in
    the prompt (see the `crlft` source)."""
    _need(inp, ("demo_logp", "demo_mask", "demo_weights"), "crlft")
    w = inp.demo_weights.float()[:, None] * inp.demo_mask
    whole = inp.whole if inp.whole is not None and inp.whole.demo_weights is not None else inp
    total = float((whole.demo_weights.float()[:, None] * whole.demo_mask).sum())
    loss = -(inp.demo_logp * w).sum() / max(total, 1e-8)
    return loss, {"loss/crlft": float(loss.detach())}


@objective("demo_kl", needs={"demos", "ref_demos"})
def demo_kl_objective(inp: LossInputs, *, estimator: KLName = "k3", agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """KL(pi || pi_ref) estimated on the demonstration tokens: SuperHF's KL prior (Mukobi et al.
    2023, arXiv:2310.16763) next to SFT on the reward-filtered samples (the `top_reward`
    demonstration source). The released code uses the full-vocabulary KL(pi_0 || pi); this is a
    per-token estimator on the sampled tokens (k3 by default), like the `kl` objective."""
    _need(inp, ("demo_logp", "demo_ref_logp", "demo_mask"), "demo_kl")
    kl = KL_ESTIMATORS.get(estimator)(inp.demo_logp, inp.demo_ref_logp)
    value = aggregate(agg, kl, inp, demo_mask_of)
    return value, {"policy/demo_kl": float(value.detach())}


__all__ = ["alol_objective", "copg_objective", "crlft_objective", "demo_kl_objective"]
