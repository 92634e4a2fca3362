"""Policy losses and loss aggregation: pure functions on per-token tensors.

    PolicyLossFn(logp [N, T], old_logp [N, T], advantages [N, T], mask [N, T], *, knobs)
        -> (per-token loss [N, T], metrics dict of floats)
    AggFn(loss [N, T], mask [N, T], totals: AggTotals | None) -> scalar

The aggregation is a separate named function (verl `agg_loss` modes), chosen per objective.
`totals` are the whole optimizer-step batch's counts (None: `mask` is the whole batch), so the
loss of a batch does not depend on how many micro-batches it is split into.
A loss that needs more per-row data than the four tensors lists the LossInputs field names
in its `extra_inputs` mark (`register(name, extra_inputs=(...))`) and takes them as keyword
arguments with default None (not
knobs); the `policy` objective passes them (verl's `register_policy_loss(extra_keys=...)`).
More losses (gspo, cispo, nft, clip_cov, kl_cov) live in `rftkit.algos.policy_losses`.

A loss whose per-token value and gradient are exactly 0 wherever the advantage is 0 (and
that reads no other row) registers with the mark `inert_at_zero_advantage=True`: the update leaves
rows with all-zero advantages out of the forward pass (`rftkit.train.update`).

Metrics (all over masked tokens): policy/clipfrac (share of tokens whose clipped branch is
active), policy/approx_kl (k3 estimate of KL(pi_old || pi)), policy/ratio_mean,
policy/ratio_max; dual clipping adds policy/clipfrac_lower.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from rftkit.registry import PartName, PartParams, Registry

POLICY_LOSSES: Registry[Callable] = Registry("policy loss")
AGGREGATIONS: Registry[Callable[..., Tensor]] = Registry("loss aggregation")
AggName = Annotated[str, PartName(AGGREGATIONS)]
"""A knob naming an aggregation (checked when the config is)."""
LossName = Annotated[str, PartName(POLICY_LOSSES)]
LossParams = Annotated[dict | None, PartParams("loss")]
"""Knobs of the policy loss named by the knob `loss`."""


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


# ---- aggregations ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AggTotals:
    """Normalizers of one aggregation over the WHOLE batch of an optimizer step.

    The loop splits that batch into `grad_accum` micro-batches and sums their aggregated
    values; each micro-batch divides by these whole-batch counts, so the sum equals the
    aggregation of the whole batch at once (verl passes `batch_num_tokens` and
    `global_batch_size` to `agg_loss` for the same reason). tokens: trained tokens (mask sum);
    seqs: rows with at least one trained token; rows: all rows; budget: Dr. GRPO's constant
    normalizer, the generation budget in tokens (rollout.max_new_tokens), None if unknown.
    """

    tokens: float
    seqs: float
    rows: int
    budget: int | None = None


def totals_of(mask: Tensor, budget: int | None = None) -> AggTotals:
    """The AggTotals of `mask` [N, T] taken as the whole batch."""
    return AggTotals(tokens=float(mask.sum()), seqs=float((mask.sum(-1) > 0).sum()),
                     rows=int(mask.shape[0]), budget=budget)


def _per_seq(values: Tensor, mask: Tensor, totals: AggTotals | None) -> Tensor:
    """Sum of `values` [N] over rows with a trained token / the whole batch's count of such rows."""
    rows = mask.sum(-1) > 0
    seqs = (totals or totals_of(mask)).seqs
    return values[rows].sum() / max(seqs, 1.0) if bool(rows.any()) else values.sum() * 0


@AGGREGATIONS.register("token_mean")
def token_mean(loss: Tensor, mask: Tensor, totals: AggTotals | None = None) -> Tensor:
    """Mean over all trained tokens of the batch (DAPO, arXiv:2503.14476, eq. 8; verl 'token-mean').

    sum(loss * mask) / totals.tokens. Shapes: loss, mask [N, T] -> scalar.
    """
    tokens = (totals or totals_of(mask)).tokens
    return (loss * mask).sum() / max(tokens, 1.0)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(loss: Tensor, mask: Tensor, totals: AggTotals | None = None) -> Tensor:
    """Mean over sequences of the per-sequence token mean (original GRPO, arXiv:2402.03300, eq. 3).

    verl 'seq-mean-token-mean'. Rows without trained tokens are left out of the mean.
    """
    return _per_seq((loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0), mask, totals)


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(loss: Tensor, mask: Tensor, totals: AggTotals | None = None) -> Tensor:
    """Mean over sequences of the per-sequence token sum (verl 'seq-mean-token-sum').

    Source: verl `agg_loss` (https://github.com/volcengine/verl, verl/trainer/ppo/core_algos.py);
    the un-normalized sum of Dr.GRPO (arXiv:2503.20783). Long sequences weigh
    more. Rows without trained tokens are left out of the mean.
    """
    return _per_seq((loss * mask).sum(-1), mask, totals)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, totals: AggTotals | None = None) -> Tensor:
    """Dr. GRPO: (1/G) sum_i sum_t loss_it / MAX_TOKENS, a constant instead of |o_i|.

    Liu et al. 2025, "Understanding R1-Zero-Like Training" (Dr. GRPO, arXiv:2503.20783, eq. in
    sec. 3.2; official code sail-sg/understand-r1-zero: `masked_sum(...) / generate_max_length`
    then the mean over the batch's responses). Here G = totals.rows (every row of the whole
    batch, so this term and `prefix_sft` on the same rows add up to Dr. GRPO over whole
    trajectories) and MAX_TOKENS = totals.budget, the generation budget (rollout.max_new_tokens),
    which the loop passes; neither moves with padding or micro-batching. Shapes: [N, T] -> scalar.
    """
    totals = totals or totals_of(mask)
    if totals.budget is None or totals.budget <= 0:
        raise ValueError("seq_mean_token_sum_norm (Dr. GRPO) needs the generation budget "
                         "(AggTotals.budget = rollout.max_new_tokens), got none")
    return (loss * mask).sum() / (max(totals.rows, 1) * totals.budget)


# ---- shared pieces --------------------------------------------------------------------------

def ratio_metrics(log_ratio: Tensor, mask: Tensor, active: Tensor) -> dict[str, float]:
    """The common policy metrics; log_ratio = logp - old_logp, active = clipped-branch tokens."""
    with torch.no_grad():
        m = mask.bool()
        ratio = log_ratio.exp()
        return {
            "policy/clipfrac": float((active & m).sum() / m.sum().clamp(min=1)),
            "policy/approx_kl": float(masked_mean(ratio - 1 - log_ratio, mask)),
            "policy/ratio_mean": float(masked_mean(ratio, mask)),
            "policy/ratio_max": float(ratio[m].max()) if bool(m.any()) else 1.0,
        }


def _log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    return (logp - old_logp) * mask  # 0 on padding, so the ratio there is exactly 1


def _dual_clip(loss: Tensor, advantages: Tensor, clip_c: float | None) -> tuple[Tensor, Tensor]:
    """For A < 0 cap the loss at -c A (dual-clip PPO); returns (loss, tokens where the cap is active)."""
    if clip_c is None:
        return loss, torch.zeros_like(loss, dtype=torch.bool)
    if clip_c <= 1.0:
        raise ValueError(f"dual-clip constant clip_c must be > 1, got {clip_c}")
    cap = -advantages * clip_c
    capped = (advantages < 0) & (loss > cap)
    return torch.where(advantages < 0, torch.minimum(loss, cap), loss), capped


# ---- policy losses --------------------------------------------------------------------------

@POLICY_LOSSES.register("pg", inert_at_zero_advantage=True)  # A * (finite): 0, no gradient at A = 0
def pg_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor) -> tuple[Tensor, dict]:
    """Vanilla policy gradient (REINFORCE): loss = -A * log pi(o_t).

    Williams 1992 (https://doi.org/10.1007/BF00992696); verl policy loss 'gpg'. No ratio and
    no clipping: only unbiased on-policy (old_logp is used for the metrics only). At the
    on-policy point its gradient equals ppo_clip's.
    Shapes: all [N, T] -> per-token loss [N, T].
    """
    lr = _log_ratio(logp, old_logp, mask)
    return -advantages * logp, ratio_metrics(lr, mask, torch.zeros_like(mask, dtype=torch.bool))


@POLICY_LOSSES.register("ppo_clip", inert_at_zero_advantage=True)
def ppo_clip_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                  clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[Tensor, dict]:
    """PPO clipped surrogate: -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A), rho = pi/pi_old.

    Schulman et al. 2017 (arXiv:1707.06347) eq. 7; clip_high > clip_low is DAPO's
    clip-higher (arXiv:2503.14476, eps_low 0.2, eps_high 0.28). Shapes: all [N, T];
    returns per-token loss [N, T]. Metrics: see the module docstring.
    """
    lr = _log_ratio(logp, old_logp, mask)
    ratio = lr.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped), ratio_metrics(lr, mask, clipped < unclipped)


@POLICY_LOSSES.register("dual_clip", inert_at_zero_advantage=True)
def dual_clip_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                   clip_low: float = 0.2, clip_high: float = 0.2, clip_c: float = 3.0) -> tuple[Tensor, dict]:
    """Dual-clip PPO: ppo_clip, and for A < 0 the loss is capped at -c A (c > 1, default 3).

    Ye et al. 2020, "Mastering Complex Control in MOBA Games" (arXiv:1912.09729);
    checked against verl `compute_policy_loss_vanilla` (clip_ratio_c = 3.0). Bounds the
    loss when A < 0 and the ratio explodes. Extra metric policy/clipfrac_lower (share of
    tokens where the cap is active). Shapes: all [N, T] -> [N, T].
    """
    base, metrics = ppo_clip_loss(logp, old_logp, advantages, mask, clip_low=clip_low, clip_high=clip_high)
    loss, capped = _dual_clip(base, advantages, clip_c)
    metrics["policy/clipfrac_lower"] = float((capped & mask.bool()).sum() / mask.bool().sum().clamp(min=1))
    return loss, metrics


@POLICY_LOSSES.register("gppo", inert_at_zero_advantage=True)
def gppo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
              clip_low: float = 0.2, clip_high: float = 0.28,
              clip_c: float | None = 3.0) -> tuple[Tensor, dict]:
    """GPPO: clip-higher PPO in the forward pass, bounded non-zero gradient on clipped tokens.

    Su et al. 2025, Klear-Reasoner (arXiv:2508.07629); checked against the official
    `compute_gppo_loss` (Kwai-Klear/KlearReasoner README): the clip bounds are
    (1 -/+ eps) * rho / sg(rho), so a clipped token has the clip value in the forward pass and
    gradient -A (1 -/+ eps) grad log pi (never zero); then verl's dual clip (c = 3) for A < 0
    (`clip_c=None` turns it off). Forward equals `dual_clip` with the same knobs, and
    `ppo_clip` wherever the dual cap is inactive. Shapes: all [N, T] -> [N, T].
    """
    lr = _log_ratio(logp, old_logp, mask)
    ratio = lr.exp()
    scale = ratio / ratio.detach()  # 1 in value, carries d ratio / d theta / ratio
    lo, hi = (1.0 - clip_low) * scale, (1.0 + clip_high) * scale
    bounded = torch.where(ratio < 1.0 - clip_low, lo, torch.where(ratio > 1.0 + clip_high, hi, ratio))
    l1, l2 = -advantages * ratio, -advantages * bounded
    loss, capped = _dual_clip(torch.maximum(l1, l2), advantages, clip_c)
    metrics = ratio_metrics(lr, mask, l2 > l1)
    metrics["policy/clipfrac_lower"] = float((capped & mask.bool()).sum() / mask.bool().sum().clamp(min=1))
    return loss, metrics

