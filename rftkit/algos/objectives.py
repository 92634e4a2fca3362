"""Objectives: the terms of the loop's loss, sum_i weight_i(step) * objective_i(inputs).

    ObjectiveFn(inputs: LossInputs, *, knobs) -> (scalar loss, metrics dict)

Each objective declares what it `needs` from the step ("rollout": on-policy samples with
advantages, "demos": demonstrations, "ref": reference-model log-probs); the loop computes
only what some objective of the stage needs. Pure functions: no model, no config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from rftkit.algos.kl import KL_ESTIMATORS
from rftkit.algos.losses import AGGREGATIONS, POLICY_LOSSES, masked_mean
from rftkit.registry import Registry


@dataclass
class LossInputs:
    """Per-token tensors of one (mini-)batch; see rftkit.types for the notation.

    Rollout part (None when the stage has no rollout): logp [N, T] (current policy, with
    grad), old_logp [N, T], advantages [N, T], mask [N, T], entropy [N, T],
    ref_logp [N, T] (only when an objective needs "ref").
    Demonstration part: demo_logp [M, T] (with grad), demo_mask [M, T], demo_entropy [M, T].
    """

    logp: Tensor | None = None
    old_logp: Tensor | None = None
    advantages: Tensor | None = None
    mask: Tensor | None = None
    entropy: Tensor | None = None
    ref_logp: Tensor | None = None
    demo_logp: Tensor | None = None
    demo_mask: Tensor | None = None
    demo_entropy: Tensor | None = None


OBJECTIVES: Registry[Callable] = Registry("objective")


def objective(name: str, needs: set[str]) -> Callable:
    """Register an objective and record what it needs from the step."""

    def deco(fn: Callable) -> Callable:
        fn.needs = frozenset(needs)
        return OBJECTIVES.register(name)(fn)

    return deco


@objective("sft", needs={"demos"})
def sft_nll(inp: LossInputs, *, agg: str = "token_mean") -> tuple[Tensor, dict]:
    """Masked negative log-likelihood of the demonstration tokens (supervised fine-tuning)."""
    loss = AGGREGATIONS.get(agg)(-inp.demo_logp, inp.demo_mask)
    return loss, {"loss/sft": float(loss.detach())}


@objective("policy", needs={"rollout"})
def policy_objective(inp: LossInputs, *, loss: str = "ppo_clip", agg: str = "token_mean",
                     loss_params: dict | None = None) -> tuple[Tensor, dict]:
    """Policy-gradient term: a registered policy loss aggregated by a registered mode.

    GRPO (arXiv:2402.03300) = advantage `grpo` + loss `ppo_clip` + a `kl` objective.
    """
    fn = POLICY_LOSSES.get(loss)
    per_token, metrics = fn(inp.logp, inp.old_logp, inp.advantages, inp.mask, **(loss_params or {}))
    value = AGGREGATIONS.get(agg)(per_token, inp.mask)
    metrics["loss/policy"] = float(value.detach())
    return value, metrics


@objective("kl", needs={"rollout", "ref"})
def kl_objective(inp: LossInputs, *, estimator: str = "k3", agg: str = "token_mean") -> tuple[Tensor, dict]:
    """KL(pi || pi_ref) penalty in the loss, as GRPO does; its weight is the coefficient beta."""
    kl = KL_ESTIMATORS.get(estimator)(inp.logp, inp.ref_logp)
    value = AGGREGATIONS.get(agg)(kl, inp.mask)
    return value, {"policy/kl": float(value.detach())}


@objective("entropy", needs={"rollout"})
def entropy_objective(inp: LossInputs, *, agg: str = "token_mean") -> tuple[Tensor, dict]:
    """Mean token entropy of the policy on its samples; use a negative weight for a bonus."""
    value = AGGREGATIONS.get(agg)(inp.entropy, inp.mask)
    return value, {"policy/entropy_term": float(value.detach())}


def needs_of(names: list[str]) -> frozenset[str]:
    out: set[str] = set()
    for n in names:
        out |= OBJECTIVES.get(n).needs
    return frozenset(out)


__all__ = ["LossInputs", "OBJECTIVES", "objective", "needs_of", "masked_mean"]
