"""Policy losses and loss aggregation: pure functions on per-token tensors (STYLE G2).

    PolicyLossFn(logp [N, T], old_logp [N, T], advantages [N, T], mask [N, T], *, knobs)
        -> (per-token loss [N, T], metrics dict of floats)
    AggFn(loss [N, T], mask [N, T]) -> scalar

The aggregation is a separate named function (verl `agg_loss` modes), chosen per objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rftkit.registry import Registry

POLICY_LOSSES: Registry[Callable] = Registry("policy loss")
AGGREGATIONS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("loss aggregation")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


@AGGREGATIONS.register("token_mean")
def token_mean(loss: Tensor, mask: Tensor) -> Tensor:
    """Mean over all trained tokens of the batch (DAPO, arXiv:2503.14476, eq. 8)."""
    return masked_mean(loss, mask)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(loss: Tensor, mask: Tensor) -> Tensor:
    """Mean over sequences of the per-sequence token mean (original GRPO, arXiv:2402.03300)."""
    per_seq = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq[mask.sum(-1) > 0].mean() if bool((mask.sum(-1) > 0).any()) else loss.sum() * 0


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                  clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[Tensor, dict]:
    """PPO clipped surrogate: -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A), rho = pi/pi_old.

    Schulman et al. 2017 (arXiv:1707.06347) eq. 7; clip_high > clip_low is DAPO's
    clip-higher (arXiv:2503.14476). Shapes: all [N, T]; returns per-token loss [N, T].
    Metrics: clipfrac (share of tokens where the clipped branch is active), approx_kl
    (k3 estimate of KL(pi_old || pi)), ratio mean/max, all over masked tokens.
    """
    log_ratio = (logp - old_logp) * mask
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        m = mask.bool()
        active = (clipped < unclipped) & m
        metrics = {
            "policy/clipfrac": float(active.sum() / m.sum().clamp(min=1)),
            "policy/approx_kl": float(masked_mean(ratio - 1 - log_ratio, mask)),
            "policy/ratio_mean": float(masked_mean(ratio, mask)),
            "policy/ratio_max": float(ratio[m].max()) if bool(m.any()) else 1.0,
        }
    return loss, metrics
