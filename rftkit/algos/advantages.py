"""Advantage estimators: one signature, registered by name (STYLE G2).

    AdvantageFn(rewards [N], group_ids [N], mask [N, T], *, knobs) -> advantages [N, T]

A sequence-level advantage is broadcast over the completion tokens and zeroed elsewhere.
Knobs are keyword-only and bound from the recipe's `advantage.params`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rftkit.registry import Registry

AdvantageFn = Callable[..., Tensor]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def group_stats(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row group mean, unbiased group std and group size, each [N].

    values [N] float, group_ids [N] long (any labels; rows sharing a label form a group).
    A group of one has std 0.
    """
    _, inv = torch.unique(group_ids, return_inverse=True)
    k = int(inv.max()) + 1
    count = torch.zeros(k, dtype=values.dtype).index_add_(0, inv, torch.ones_like(values))
    mean = torch.zeros(k, dtype=values.dtype).index_add_(0, inv, values) / count
    sq = torch.zeros(k, dtype=values.dtype).index_add_(0, inv, (values - mean[inv]) ** 2)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    return mean[inv], std[inv], count[inv]


def broadcast(seq_adv: Tensor, mask: Tensor) -> Tensor:
    """[N] -> [N, T], zero outside the mask."""
    return seq_adv[:, None] * mask


@ADVANTAGES.register("grpo")
def grpo_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, *,
                    normalize_std: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO: A_i = (r_i - mean_group(r)) / (std_group(r) + eps).

    Shao et al. 2024, "DeepSeekMath" (arXiv:2402.03300), outcome supervision, section 4.1.2.
    With `normalize_std=False` this is Dr.GRPO's advantage (Liu et al. 2025, arXiv:2503.20783).
    The std is the unbiased sample std, as in verl `compute_grpo_outcome_advantage`.
    Shapes: rewards [N], group_ids [N], mask [N, T] -> [N, T]. Equal rewards in a group -> 0.
    """
    mean, std, _ = group_stats(rewards.float(), group_ids)
    adv = rewards - mean
    if normalize_std:
        adv = adv / (std + eps)
    return broadcast(adv, mask)
