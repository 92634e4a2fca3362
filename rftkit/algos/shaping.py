"""Reward shaping the loop applies between verification and advantages: pure functions.

    kl_in_reward          rewards [N] or [N, T] -> token rewards [N, T] minus beta * KL  (PPO/ReFT)
    adaptive_kl_coef      beta_t -> beta_{t+1} (Ziegler et al. adaptive controller)
    dapo_overlong_penalty lengths [N] -> soft overlong penalty [N] (DAPO eq. 13)
    zero_variance_groups  rewards [N], group_ids [N] -> bool [N] (groups with one reward value)

None of these is registered: the loop calls them by name where its config says so.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rftkit.algos.advantages import token_rewards
from rftkit.algos.kl import KL_ESTIMATORS


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


def zero_variance_groups(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Rows whose group's rewards are all equal (they get zero group-relative advantage).

    DAPO dynamic sampling drops these groups (arXiv:2503.14476, constraint
    0 < #correct < G); log their share every step (vanishing gradients, arXiv:2310.20703).
    Shapes: rewards [N], group_ids [N] -> bool [N].
    """
    r = rewards.float()
    _, inv = torch.unique(group_ids, return_inverse=True)
    k = int(inv.max()) + 1
    hi = torch.full((k,), -float("inf"), device=r.device).scatter_reduce(0, inv, r, reduce="amax")
    lo = torch.full((k,), float("inf"), device=r.device).scatter_reduce(0, inv, r, reduce="amin")
    return (hi == lo)[inv]


__all__ = ["kl_in_reward", "adaptive_kl_coef", "dapo_overlong_penalty", "zero_variance_groups"]
