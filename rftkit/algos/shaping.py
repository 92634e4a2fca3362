"""Reward transforms: between verification and advantages, pure functions registered by name.

    RewardTransformFn(rewards [N] or [N, T], batch: RewardBatch, *, knobs) -> Shaped

A stage lists them in order (`rollout.rewards`); each gets the rewards (and the loss mask) the
previous one returned. Sequence rewards stay [N]; a token-level transform (KL in the reward,
mark `token_level`) returns [N, T], which only the advantage estimator reads
(`RolloutBatch.rewards` keeps the last [N] rewards), so it must be the last of the list.
`Shaped.kl_coef` carries the adaptive KL coefficient to the next step. The math they use is
below them as plain functions:

    kl_in_reward          rewards [N] or [N, T] -> token rewards [N, T] minus beta * KL  (PPO/ReFT)
    adaptive_kl_coef      beta_t -> beta_{t+1} (Ziegler et al. adaptive controller)
    dapo_overlong_penalty lengths [N] -> soft overlong penalty [N] (DAPO eq. 13)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rftkit.algos.advantages import token_rewards
from rftkit.algos.kl import KL_ESTIMATORS, KLName
from rftkit.registry import Registry


def kl_in_reward(rewards: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float,
                 estimator: str = "k1") -> Tensor:
    """Token rewards r_t = 1[t = last] R - beta * KL_t, 0 where mask = 0.

    PPO-RLHF per-token KL penalty (Ziegler et al. 2019, arXiv:1909.08593; Ouyang et al. 2022,
    arXiv:2203.02155; ReFT arXiv:2401.08967), checked against verl `apply_kl_penalty`:
    token_level_rewards = token_level_scores - beta * kl_penalty(old_log_prob, ref_log_prob).
    `logp` is the rollout policy's log-probs (old_logp, no grad needed); `estimator` names a
    KL_ESTIMATORS entry ("k1" is verl's default 'kl'). An [N] reward goes on the last trained
    token; an [N, T] reward is used as is. Feed the result to `reinforce_pp` or `gae`.
    Shapes: rewards [N] or [N, T], logp / ref_logp / mask [N, T] -> [N, T].
    """
    kl = KL_ESTIMATORS.get(estimator)(logp.detach().float(), ref_logp.detach().float())
    return (token_rewards(rewards, mask) - beta * kl) * mask


def adaptive_kl_coef(current_coef: float, observed_kl: float, target: float, horizon: float,
                     n_steps: int) -> float:
    """beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon).

    Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"
    (arXiv:1909.08593); checked against verl `AdaptiveKLController.update`
    (n_steps = rollouts in the batch). Raises the coefficient when the observed KL is above
    target, lowers it when below; the proportional error is clipped to +-20 %.
    """
    if target <= 0 or horizon <= 0:
        raise ValueError("adaptive_kl_coef needs target > 0 and horizon > 0")
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return current_coef * (1.0 + error * n_steps / horizon)


def dapo_overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO soft overlong punishment, added to the reward.

    Yu et al. 2025, "DAPO" (arXiv:2503.14476), eq. 13:
        0                                   if L <= L_max - L_cache
        ((L_max - L_cache) - L) / L_cache    if L_max - L_cache < L <= L_max
        -1                                  if L > L_max
    (verl's DAPO reward manager implements the middle branch with `overlong_buffer`).
    Shapes: lengths [N] (completion tokens) -> penalty [N] float in [-1, 0].
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}")
    length = lengths.float()
    soft = ((max_len - cache_len) - length) / cache_len
    out = torch.where(length <= max_len - cache_len, torch.zeros_like(length), soft)
    return torch.where(length > max_len, torch.full_like(length, -1.0), out)


@dataclass(frozen=True)
class RewardBatch:
    """What a reward transform may read, all for the collated rows: mask [N, T] (trained
    completion tokens), lengths [N] (completion tokens), truncated [N] bool (hit the budget),
    offpolicy [N] bool (demonstration rows), logp [N, T] (behaviour log-probs), ref_logp [N, T]
    (None unless the transform needs "ref"), max_new_tokens, kl_coef (the adaptive coefficient
    carried across steps, None at a stage's start), rollouts (G x prompts per step);
    step_mask [N, T] (1 at each step's last token) and step_scores [N, T] (a process reward
    model's sigmoid score there, 0 elsewhere), both None unless a transform needs "prm".
    Multi-turn rows (None when no row is an episode): turn_ends [N, T] (1 at each model turn's
    last token), turn_rewards [N, T] (the env's reward after that turn, there), episode_info
    (per-row env info summed over the episode, each [N]: tool_calls, tool_errors, call_score,
    ..., turns, episode = 1 for a multi-turn row; `rftkit.algos.multiturn.episode_info`)."""

    mask: Tensor
    lengths: Tensor
    truncated: Tensor
    offpolicy: Tensor
    logp: Tensor
    ref_logp: Tensor | None
    max_new_tokens: int
    kl_coef: float | None
    rollouts: int
    step_mask: Tensor | None = None
    step_scores: Tensor | None = None
    turn_ends: Tensor | None = None
    turn_rewards: Tensor | None = None
    episode_info: dict[str, Tensor] | None = None


@dataclass(frozen=True)
class Shaped:
    rewards: Tensor
    mask: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    kl_coef: float | None = None


REWARD_TRANSFORMS: Registry[Callable[..., Shaped]] = Registry("reward transform")


@REWARD_TRANSFORMS.register("dapo_overlong")
def dapo_overlong(rewards: Tensor, batch: RewardBatch, *, cache: int = 8) -> Shaped:
    """DAPO soft overlong punishment (arXiv:2503.14476, eq. 13) over the last `cache` tokens of
    the budget, added to each sampled row's reward (demonstration rows are left alone)."""
    pen = dapo_overlong_penalty(batch.lengths, batch.max_new_tokens, cache)
    return Shaped(rewards + pen * (~batch.offpolicy).to(pen.dtype), batch.mask)


@REWARD_TRANSFORMS.register("mask_truncated")
def mask_truncated(rewards: Tensor, batch: RewardBatch) -> Shaped:
    """DAPO overlong filtering (arXiv:2503.14476): completions that hit the token
    budget are left out of the loss (mask 0); their reward still counts for the group."""
    return Shaped(rewards, batch.mask * (~batch.truncated).to(batch.mask.dtype)[:, None])


@REWARD_TRANSFORMS.register("length_penalty")
def length_penalty(rewards: Tensor, batch: RewardBatch, *, coef: float = 0.1) -> Shaped:
    """A linear cost on length: r - coef * L / max_new_tokens for sampled rows (the simplest
    length penalty; its coefficient is the user's, not a paper's)."""
    pen = coef * batch.lengths.to(rewards.dtype) / batch.max_new_tokens
    return Shaped(rewards - pen * (~batch.offpolicy).to(rewards.dtype), batch.mask)


@REWARD_TRANSFORMS.register("kl_penalty", needs={"ref"}, token_level=True)
def kl_penalty(rewards: Tensor, batch: RewardBatch, *, coef: float = 0.01, estimator: KLName = "k1",
               target: float | None = None, horizon: int = 10000) -> Shaped:
    """KL(pi || ref) subtracted from the token rewards (`kl_in_reward`), with Ziegler et al.'s
    adaptive coefficient when `target` is set (`adaptive_kl_coef`, towards `target` KL per
    token over `horizon` rollouts); `coef` is the coefficient at the stage's start."""
    beta = coef if batch.kl_coef is None else batch.kl_coef
    shaped = kl_in_reward(rewards, batch.logp, batch.ref_logp, batch.mask, beta, estimator)
    kl = float(((batch.logp - batch.ref_logp) * batch.mask).sum() / batch.mask.sum().clamp(min=1))
    nxt = beta if target is None else adaptive_kl_coef(beta, kl, target, horizon, batch.rollouts)
    return Shaped(shaped, batch.mask, {"policy/kl_reward": kl, "policy/kl_coef": beta}, kl_coef=nxt)


__all__ = ["REWARD_TRANSFORMS", "RewardBatch", "Shaped", "adaptive_kl_coef", "dapo_overlong_penalty",
           "kl_in_reward"]
