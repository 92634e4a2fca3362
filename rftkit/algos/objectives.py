"""Objectives: the terms of the loop's loss, sum_i weight_i(step) * objective_i(inputs).

    ObjectiveFn(inputs: LossInputs, *, knobs) -> (scalar loss, metrics dict)

Each objective declares what it `needs` from the step ("rollout": on-policy samples with
advantages, "demos": demonstrations, "ref": reference-model log-probs, "values": critic
predictions and returns); the loop computes only what some objective of the stage needs.
Pure functions: no model, no config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rftkit.algos import policy_losses as _policy_losses  # noqa: F401  (registers more losses)
from rftkit.algos.kl import KL_ESTIMATORS, KLName
from rftkit.algos.losses import AGGREGATIONS, POLICY_LOSSES, AggName, LossName, LossParams, masked_mean, totals_of
from rftkit.registry import Bound, Registry


@dataclass
class LossInputs:
    """Per-token tensors of one (mini-)batch; see rftkit.types for the notation.

    Rollout part (None when the stage has no rollout): logp [N, T] (current policy, with
    grad), old_logp [N, T], advantages [N, T], mask [N, T], entropy [N, T],
    ref_logp [N, T] (only when an objective needs "ref").
    Filled by the loop whenever it has them (objectives that need them raise without):
      behav_logp [N, T]: log-probs the rollout engine reported when sampling
        (RolloutBatch.old_logp), for the `policy` objective's `tis_cap` correction;
      rewards [N]: each row's sequence reward (RolloutBatch.rewards), and
      group_reward_mean [N]: mean reward of the row's group over the whole batch
        (`advantages.group_stats(rewards, group_ids)[0]`, computed before minibatching),
        both for policy losses listing them in `extra_inputs` (nft).
    Critic part (objectives that need "values"): values [N, T] (current critic, with grad),
    old_values [N, T] (critic at rollout time), returns [N, T] (`advantages.gae_returns`).
    Hybrid part (SFT<->RL mixing, rftkit.algos.hybrid): offpolicy [N] bool (rows that are
    demonstrations placed in the group, LUFFY), prefix_mask [N, T] (forced demonstration-prefix
    tokens of prefix rollouts, Prefix-RFT; they are not in `mask`), teacher_logp [N, T]
    (a teacher's log-probs of the rollout tokens, needs "teacher", KDRL).
    Demonstration part: demo_logp [M, T] (with grad), demo_mask [M, T], demo_entropy [M, T],
    demo_tokens [M, T] (the demonstration token ids), demo_ref_logp [M, T] (reference policy on
    the demonstrations, needs "ref_demos"), demo_next_logp [M, T-1, V] (with grad, needs
    "demo_dist"): the full next-token log-softmax, demo_next_logp[:, t] = log pi(. | tokens[:, :t+1])
    is the distribution of demo_tokens[:, t+1] (the tensor the forward pass builds anyway; OTR);
    demo_weights [M]: each demonstration's weight (DemoBatch.weights; C-RLFT's class reward).
    Pair part (preference objectives, rftkit.algos.preference): pair_logp [P, 2, T] (with grad),
    pair_mask [P, 2, T], pair_rewards [P, 2], pair_ref_logp [P, 2, T] (needs "ref_pairs"),
    pair_scores [P, 2] (a reward model's scores, with grad, needs "scores"); index 0 chosen,
    1 rejected. scores [N]: the reward model's scores of the rollout rows (needs "scores").
    Process part (rftkit.algos.process): token_scores [N, T] (the scorer's logit at every token,
    with grad, needs "scores"), step_labels [N, T] (Math-Shepherd labels at step ends, needs
    "step_labels"), step_mask [N, T] (1 at each step's last token).
    seed: a reproducible per-micro-batch seed derived from the step seed, for objectives that
    sample (OTR): they draw from their own torch.Generator, never the global RNG, so resume is exact.
    Normalization (see `aggregate`): whole holds the mask-like fields (mask, prefix_mask,
    rewards, offpolicy, demo_mask, demo_weights, pair_mask,
    step_mask) of the whole optimizer-step batch this micro-batch is a
    slice of (None: this is the whole batch); max_tokens is the generation budget
    (rollout.max_new_tokens), Dr. GRPO's constant.
    """

    logp: Tensor | None = None
    old_logp: Tensor | None = None
    advantages: Tensor | None = None
    mask: Tensor | None = None
    entropy: Tensor | None = None
    ref_logp: Tensor | None = None
    behav_logp: Tensor | None = None
    rewards: Tensor | None = None
    group_reward_mean: Tensor | None = None
    values: Tensor | None = None
    old_values: Tensor | None = None
    returns: Tensor | None = None
    offpolicy: Tensor | None = None
    prefix_mask: Tensor | None = None
    teacher_logp: Tensor | None = None
    demo_logp: Tensor | None = None
    demo_mask: Tensor | None = None
    demo_entropy: Tensor | None = None
    demo_ref_logp: Tensor | None = None
    demo_tokens: Tensor | None = None
    demo_next_logp: Tensor | None = None
    demo_weights: Tensor | None = None
    pair_logp: Tensor | None = None
    pair_mask: Tensor | None = None
    pair_rewards: Tensor | None = None
    pair_ref_logp: Tensor | None = None
    pair_scores: Tensor | None = None
    scores: Tensor | None = None
    token_scores: Tensor | None = None
    step_labels: Tensor | None = None
    step_mask: Tensor | None = None
    seed: int | None = None
    whole: LossInputs | None = None
    max_tokens: int | None = None


def aggregate(agg: str, per_token: Tensor, inp: LossInputs,
              mask_of: Callable[[LossInputs], Tensor] = lambda v: v.mask) -> Tensor:
    """Aggregate per-token values [N, T] over `mask_of(inp)` by the registered mode `agg`, with
    the normalizers (token and row counts) of `mask_of(inp.whole)`: the micro-batches of one
    optimizer step then sum to the whole batch's loss, whatever `optim.grad_accum` is.
    `mask_of` must build the mask from LossInputs fields that `whole` carries."""
    mask = mask_of(inp)
    totals = totals_of(mask_of(inp.whole if inp.whole is not None else inp), inp.max_tokens)
    return AGGREGATIONS.get(agg)(per_token, mask, totals)


def demo_mask_of(inp: LossInputs) -> Tensor:
    return inp.demo_mask


OBJECTIVES: Registry[Callable] = Registry("objective")


def objective(name: str, needs: set[str], **marks) -> Callable:
    """Register an objective with what it needs from the step (and marks, e.g. `inert_rows`)."""
    return OBJECTIVES.register(name, needs=needs, **marks)


@objective("sft", needs={"demos"})
def sft_nll(inp: LossInputs, *, agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """Masked negative log-likelihood of the demonstration tokens (supervised fine-tuning, the
    SFT stage of Ouyang et al. 2022, arXiv:2203.02155)."""
    loss = aggregate(agg, -inp.demo_logp, inp, demo_mask_of)
    return loss, {"loss/sft": float(loss.detach())}


def tis_weight(old_logp: Tensor, behav_logp: Tensor, mask: Tensor, cap: float) -> tuple[Tensor, dict]:
    """Truncated importance sampling weight min(pi_old / pi_behav, cap), no gradient; [N, T].

    Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"
    (https://fengyao.notion.site/off-policy-rl); checked against verl
    `compute_policy_loss_vanilla` (`tis_imp_ratio_cap`): pg_losses *= clamp(exp(old_log_prob -
    rollout_log_probs), max=cap). Corrects the rollout-engine vs trainer log-prob mismatch.
    """
    with torch.no_grad():
        raw = ((old_logp - behav_logp) * mask).exp()
        w = raw.clamp(max=cap)
        m = mask.bool()
        metrics = {"policy/tis_weight_mean": float(masked_mean(w, mask)),
                   "policy/tis_clipfrac": float((raw > cap)[m].float().mean()) if bool(m.any()) else 0.0}
    return w, metrics


def entropy_top_mask(entropy: Tensor, mask: Tensor, top: float) -> tuple[Tensor, dict]:
    """1 on the top-`top` fraction of masked tokens by entropy (ties kept), 0 elsewhere; [N, T].

    Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective
    RL for LLM Reasoning" (arXiv:2506.01939): the policy gradient is kept only where
    H_t >= tau, tau the batch's (1 - rho) entropy quantile (rho = 0.2). Here k =
    ceil(top * n) tokens of the (micro-)batch this objective sees, tau = the k-th largest.
    """
    if not 0.0 < top <= 1.0:
        raise ValueError(f"entropy_mask_top must be in (0, 1], got {top}")
    with torch.no_grad():
        ent = entropy.detach()
        vals = ent[mask > 0]
        if vals.numel() == 0:
            return torch.zeros_like(mask), {"policy/entropy_mask_frac": 0.0}
        k = max(1, math.ceil(top * vals.numel()))
        tau = torch.topk(vals, k).values.min()
        keep = ((ent >= tau) & (mask > 0)).to(mask.dtype)
        metrics = {"policy/entropy_mask_frac": float(keep.sum() / vals.numel()),
                   "policy/entropy_threshold": float(tau)}
    return keep, metrics


def _policy_inert(*, loss: str = "ppo_clip", entropy_mask_top: float | None = None, **_) -> bool:
    # entropy_mask_top picks tokens by a batch-wide quantile: other rows move it.
    return entropy_mask_top is None and POLICY_LOSSES.mark(loss, "inert_at_zero_advantage", False)


@objective("policy", needs={"rollout"}, inert_rows=_policy_inert)
def policy_objective(inp: LossInputs, *, loss: LossName = "ppo_clip", agg: AggName = "token_mean",
                     loss_params: LossParams = None, tis_cap: float | None = None,
                     entropy_mask_top: float | None = None) -> tuple[Tensor, dict]:
    """Policy-gradient term: a registered policy loss aggregated by a registered mode.

    GRPO (arXiv:2402.03300) = advantage `grpo` + loss `ppo_clip` + a `kl` objective.
    `tis_cap`: multiply the per-token loss by min(exp(old_logp - behav_logp), cap)
    (truncated IS, see `tis_weight`; needs inp.behav_logp, e.g. cap = 2).
    `entropy_mask_top`: keep the gradient only on the top fraction of tokens by entropy
    ("80/20", arXiv:2506.01939, use 0.2; needs inp.entropy). Both multiply the per-token loss
    before aggregation, so the normalizer (e.g. all tokens for token_mean) is unchanged, as
    in the papers. Losses listing `extra_inputs` (nft) get those LossInputs fields.
    """
    fn = POLICY_LOSSES.bind(loss, loss_params, where="policy loss")
    extra = {k: getattr(inp, k) for k in POLICY_LOSSES.mark(loss, "extra_inputs", ())}
    per_token, metrics = fn(inp.logp, inp.old_logp, inp.advantages, inp.mask, **extra)
    if tis_cap is not None:
        if inp.behav_logp is None:
            raise ValueError("policy objective: tis_cap is set but LossInputs.behav_logp is None")
        w, m = tis_weight(inp.old_logp, inp.behav_logp, inp.mask, tis_cap)
        per_token = per_token * w
        metrics.update(m)
    if entropy_mask_top is not None:
        if inp.entropy is None:
            raise ValueError("policy objective: entropy_mask_top is set but LossInputs.entropy is None")
        keep, m = entropy_top_mask(inp.entropy, inp.mask, entropy_mask_top)
        per_token = per_token * keep
        metrics.update(m)
    value = aggregate(agg, per_token, inp)
    metrics["loss/policy"] = float(value.detach())
    return value, metrics


def inert_at_zero_advantage(fn: Bound) -> bool:
    """True if the bound objective `fn` gives a rollout row exactly zero loss and gradient
    whenever the row's advantage is 0 at every trained token, whatever the other rows hold, so
    the update may leave such rows out of the forward pass. Objectives opt in with an
    `inert_rows(**knobs) -> bool` mark; the others (kl, entropy, value, hybrids) do not."""
    check = fn.marks.get("inert_rows")
    return bool(check is not None and check(**fn.knobs))


@objective("kl", needs={"rollout", "ref"})
def kl_objective(inp: LossInputs, *, estimator: KLName = "k3", agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """KL(pi || pi_ref) penalty in the loss, as GRPO does (arXiv:2402.03300, eq. 3-4); its weight
    is the coefficient beta. For KL in the reward (PPO) see `rftkit.algos.shaping.kl_in_reward`."""
    kl = KL_ESTIMATORS.get(estimator)(inp.logp, inp.ref_logp)
    value = aggregate(agg, kl, inp)
    return value, {"policy/kl": float(value.detach())}


@objective("entropy", needs={"rollout"})
def entropy_objective(inp: LossInputs, *, agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """Mean token entropy of the policy on its samples; use a negative weight for a bonus
    (entropy regularization, Mnih et al. 2016, A3C, arXiv:1602.01783)."""
    value = aggregate(agg, inp.entropy, inp)
    return value, {"policy/entropy_term": float(value.detach())}


@objective("value", needs={"rollout", "values"})
def value_objective(inp: LossInputs, *, clip: float | None = 0.5, agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """Clipped critic loss 0.5 * max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2).

    PPO value clipping (Schulman et al. 2017, arXiv:1707.06347; the form of OpenAI baselines
    ppo2), checked against verl `compute_value_loss` (cliprange_value 0.5, 0.5 * agg of the
    max). `clip=None` is the plain 0.5 (V - R)^2. Needs inp.values [N, T] (with grad),
    inp.old_values [N, T] and inp.returns [N, T] (`advantages.gae_returns`). Metrics:
    loss/value, value/clipfrac (share of tokens where the clipped term is larger), value/mean.
    """
    if inp.values is None or inp.old_values is None or inp.returns is None:
        raise ValueError("value objective needs LossInputs.values, old_values and returns")
    v, ret, mask = inp.values, inp.returns, inp.mask
    l1 = (v - ret) ** 2
    if clip is None:
        per_token, active = l1, torch.zeros_like(mask, dtype=torch.bool)
    else:
        v_clip = inp.old_values + (v - inp.old_values).clamp(-clip, clip)
        l2 = (v_clip - ret) ** 2
        per_token, active = torch.maximum(l1, l2), l2 > l1
    value = 0.5 * aggregate(agg, per_token, inp)
    m = mask.bool()
    return value, {"loss/value": float(value.detach()),
                   "value/clipfrac": float((active & m).sum() / m.sum().clamp(min=1)),
                   "value/mean": float(masked_mean(v.detach(), mask))}


def needs_of(names: list[str]) -> frozenset[str]:
    out: set[str] = set()
    for n in names:
        out |= OBJECTIVES.needs(n)
    return frozenset(out)


__all__ = ["OBJECTIVES", "LossInputs", "aggregate", "demo_mask_of", "inert_at_zero_advantage", "masked_mean",
           "needs_of", "objective"]
