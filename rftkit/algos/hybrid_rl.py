"""Hybrid RL terms: mixed on/off-policy policy losses (LUFFY, RL-PLUS), the forced-prefix term
of Prefix-RFT, and the teacher KL of KDRL.

    PolicyLossFn(logp [N, T], old_logp [N, T], advantages [N, T], mask [N, T],
                 offpolicy [N] | None, *, knobs) -> (per-token loss [N, T], metrics)
    ObjectiveFn(inp: LossInputs, *, knobs) -> (scalar loss, metrics)

`offpolicy` rows are demonstrations placed inside the on-policy group (LUFFY-style); the
policy losses list it in `extra_inputs`, so the `policy` objective passes
LossInputs.offpolicy. Their behaviour probability is unknown (behav_logp = 0): the off-policy
branches never divide by it. Registered on import of `rftkit.algos.hybrid`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rftkit.algos.hybrid_sft import need
from rftkit.algos.kl import KL_ESTIMATORS, KLName
from rftkit.algos.losses import POLICY_LOSSES, AggName, _log_ratio, masked_mean, ratio_metrics
from rftkit.algos.objectives import LossInputs, aggregate, entropy_top_mask, objective


def _split(offpolicy: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(off rows [N, 1] bool, on-policy token mask [N, T], off-policy token mask [N, T])."""
    if offpolicy is None:
        off = torch.zeros(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
    else:
        off = offpolicy.to(device=mask.device, dtype=torch.bool).reshape(-1, 1)
    off_tok = off.to(mask.dtype) * mask
    return off, mask - off_tok, off_tok


def _on_policy(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, on_tok: Tensor,
               clip_low: float, clip_high: float, clip: bool) -> tuple[Tensor, dict]:
    """PPO clip surrogate (or unclipped -A rho), metrics over the on-policy tokens only."""
    lr = _log_ratio(logp, old_logp, mask)
    ratio = lr.exp()
    unclipped = ratio * advantages
    if not clip:
        return -unclipped, ratio_metrics(lr, on_tok, torch.zeros_like(mask, dtype=torch.bool))
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped), ratio_metrics(lr, on_tok, clipped < unclipped)


def _off_metrics(metrics: dict, logp: Tensor, weight: Tensor, mask: Tensor, off_tok: Tensor) -> dict:
    with torch.no_grad():
        metrics["mix/off_token_frac"] = float(off_tok.sum() / mask.sum().clamp(min=1))
        metrics["mix/off_prob_mean"] = float(masked_mean(logp.detach().exp(), off_tok))
        metrics["mix/off_weight_mean"] = float(masked_mean(weight.detach(), off_tok))
    return metrics


@POLICY_LOSSES.register("luffy", extra_inputs=("offpolicy",))
def luffy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
               offpolicy: Tensor | None = None, *, gamma: float = 0.1, clip_low: float = 0.2,
               clip_high: float = 0.2, on_clip: bool = True) -> tuple[Tensor, dict]:
    """LUFFY mixed-policy loss: PPO clip on on-policy rows, policy shaping on off-policy rows.

    Off-policy tokens: loss = -A f(p), f(p) = p / (p + gamma), with the behaviour policy's
    probability taken as 1 and no clipping, so the gradient -A gamma p / (p + gamma)^2 grad log p
    is non-zero where a PPO ratio would be clipped. On-policy rows: `ppo_clip` (unclipped -A rho
    with `on_clip=False`, as LUFFY's released script). Do not combine with `tis_cap` (behav_logp
    of demo rows is 0). Shapes: [N, T] tensors, offpolicy [N] bool (None = all on-policy).
    Metrics: the ratio metrics over on-policy tokens, mix/off_token_frac, mix/off_prob_mean,
    mix/off_weight_mean. Yan et al. 2025, LUFFY (arXiv:2504.14945); source and the released
    script's settings: docs/hybrids_math.md, section 2.
    """
    off, on_tok, off_tok = _split(offpolicy, mask)
    on_loss, metrics = _on_policy(logp, old_logp, advantages, mask, on_tok, clip_low, clip_high, on_clip)
    p = logp.exp()
    shaped = p / (p + gamma)
    loss = torch.where(off, -advantages * shaped, on_loss)
    return loss, _off_metrics(metrics, logp, shaped, mask, off_tok)




@POLICY_LOSSES.register("rl_plus", extra_inputs=("offpolicy",))
def rl_plus_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                 offpolicy: Tensor | None = None, *, clip_low: float = 0.2, clip_high: float = 0.2,
                 explore_exp: float = 0.5) -> tuple[Tensor, dict]:
    """RL-PLUS: multiple importance sampling and an exploration-based advantage on off-policy rows.

    Off-policy tokens: loss = -r A (1 - sg(p))^explore_exp, unclipped, with the MIS ratio
    r = 2 p / (p_old + omega), omega = (p_old + 1) / 2 (a mixture of the old policy and an expert
    whose probability is taken as 1); p_old = exp(old_logp), the policy before this update on the
    demonstration, not the unknown behaviour policy. On-policy rows: `ppo_clip`. RL-PLUS's own
    advantage (normalized over the on-policy samples only) is not made here. Shapes: [N, T],
    offpolicy [N] bool. Metrics: as `luffy` (mix/off_weight_mean = mean MIS ratio). Dong et al.
    2025, RL-PLUS (arXiv:2508.00222); source: docs/hybrids_math.md, section 2.
    """
    off, on_tok, off_tok = _split(offpolicy, mask)
    on_loss, metrics = _on_policy(logp, old_logp, advantages, mask, on_tok, clip_low, clip_high, True)
    p, p_old = logp.exp(), old_logp.exp()
    ratio = 2.0 * p / (p_old + 0.5 * (p_old + 1.0))
    explore = advantages * (1.0 - p.detach()).clamp(min=0.0) ** explore_exp
    loss = torch.where(off, -ratio * explore, on_loss)
    return loss, _off_metrics(metrics, logp, ratio, mask, off_tok)




def _row_advantage(advantages: Tensor, mask: Tensor) -> Tensor:
    """Each row's advantage: the mean over its trained tokens (exact for sequence-level
    estimators, which broadcast one value per row); 0 for rows with none. [N, 1]."""
    return ((advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1.0))[:, None]


def _prefix_mask_of(inp: LossInputs) -> Tensor:
    return inp.prefix_mask.to(inp.mask.dtype)


def _incorrect_mask_of(inp: LossInputs) -> Tensor:
    """The trained tokens of rows with reward <= 0 (KDRL's reward-guided variant)."""
    return inp.mask * (inp.rewards <= 0).to(inp.mask.dtype)[:, None]


@objective("prefix_sft", needs={"rollout"})
def prefix_sft_objective(inp: LossInputs, *, weighting: Literal["advantage", "nll"] = "advantage",
                         entropy_top: float | None = 0.2,
                         agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """Prefix-RFT term on the forced demonstration-prefix tokens (prefix_mask), which the
    `policy` objective never sees (they are not in `mask`).

    `weighting="advantage"` (default): -A_row p / sg(p) per prefix token (value -A, gradient
    -A grad log p; the row's advantage is the mean over its trained tokens, because the loop zeroes
    advantages off `mask`); `weighting="nll"`: the plain NLL -log p. The prefix-token loss form is
    unconfirmed. `entropy_top` keeps the top fraction of prefix tokens by entropy (None = all;
    `objectives.entropy_top_mask`); the normalizer stays all prefix tokens. With
    `agg: seq_mean_token_sum_norm` on both this and `policy` their sum is exactly the Dr. GRPO loss
    over whole trajectories. Needs logp, advantages, mask, entropy, prefix_mask [N, T]. Metrics:
    loss/prefix_sft, mix/prefix_grad_frac (share of prefix tokens with gradient),
    mix/prefix_prob_mean. Huang et al. 2025, Prefix-RFT (arXiv:2507.01679); sources:
    docs/hybrids_math.md, section 1.
    """
    need(inp, ("logp", "mask"), "prefix_sft")
    if inp.prefix_mask is None or not bool(inp.prefix_mask.any()):
        return inp.logp.sum() * 0.0, {"loss/prefix_sft": 0.0, "mix/prefix_grad_frac": 0.0}
    pm = inp.prefix_mask.to(inp.logp.dtype)
    if weighting == "advantage":
        need(inp, ("advantages",), "prefix_sft")
        per_token = -_row_advantage(inp.advantages, inp.mask) * torch.exp(inp.logp - inp.logp.detach())
    elif weighting == "nll":
        per_token = -inp.logp
    else:
        raise ValueError(f"prefix_sft weighting must be 'advantage' or 'nll', got {weighting!r}")
    keep = pm
    if entropy_top is not None:
        need(inp, ("entropy",), "prefix_sft")
        keep, _ = entropy_top_mask(inp.entropy, pm, entropy_top)
    value = aggregate(agg, per_token * keep, inp, _prefix_mask_of)
    return value, {"loss/prefix_sft": float(value.detach()),
                   "mix/prefix_grad_frac": float(keep.sum() / pm.sum()),
                   "mix/prefix_prob_mean": float(masked_mean(inp.logp.detach().exp(), pm))}


@objective("teacher_kl", needs={"rollout", "teacher"})
def teacher_kl_objective(inp: LossInputs, *, estimator: KLName = "k2", agg: AggName = "token_mean",
                         only_incorrect: bool = False) -> tuple[Tensor, dict]:
    """KDRL distillation term: reverse KL(pi_theta || pi_teacher) on the student's own samples.

    J = J_GRPO - beta KL(pi_theta || pi_T): per token KL_ESTIMATORS on (logp, teacher_logp); the
    objective's weight is beta. Default `k2` = (log pi - log pi_T)^2 / 2: as a loss its on-policy
    gradient is (log pi - log pi_T) grad log pi, the per-token reverse-KL policy gradient
    (arXiv:2510.01555); `k3` is >= 0 but a biased RKL gradient; `k1` as a loss has zero expected
    gradient. `only_incorrect`: KD only on rows with reward <= 0 (the reward-guided variant).
    KDRL's own estimator and the `only_incorrect` form are unconfirmed. Needs logp, mask,
    teacher_logp [N, T] (+ rewards [N] for only_incorrect). Metrics: loss/teacher_kl. Xu et al.
    2025, KDRL (arXiv:2506.02208); sources: docs/hybrids_math.md, section 1.
    """
    need(inp, ("logp", "mask", "teacher_logp"), "teacher_kl")
    if only_incorrect:
        need(inp, ("rewards",), "teacher_kl")
    kl = KL_ESTIMATORS.get(estimator)(inp.logp, inp.teacher_logp)
    value = aggregate(agg, kl, inp, _incorrect_mask_of if only_incorrect else (lambda v: v.mask))
    return value, {"loss/teacher_kl": float(value.detach())}
