"""Group-by helpers: the one place rows are grouped by a label (a prompt's group, a source,
a difficulty), used by the rollout metrics, prompt statistics, demonstration sources,
curricula and evaluation.

    group_rows(labels) -> {label: [row, ...]} in first-appearance order
    group_reduce(values [N], group_ids [N]) -> GroupReduce (per group, first-appearance order)

The per-row counterpart used by the advantage estimators is `advantages.group_stats`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor


def group_rows(labels: Iterable[Hashable] | Tensor) -> dict:
    """Row indices of each label, labels in order of first appearance. A tensor's elements
    are read as Python numbers, so `group_rows(group_ids)` keys are ints."""
    out: dict = {}
    items = labels.tolist() if isinstance(labels, Tensor) else labels
    for row, key in enumerate(items):
        out.setdefault(key, []).append(row)
    return out


@dataclass(frozen=True)
class GroupReduce:
    """Per-group statistics, each [K] in first-appearance order of the labels: labels, first
    row of each group, count, mean, unbiased std (0 for a group of one), min, max."""

    labels: Tensor
    first: Tensor
    count: Tensor
    mean: Tensor
    std: Tensor
    min: Tensor
    max: Tensor


def group_reduce(values: Tensor, group_ids: Tensor) -> GroupReduce:
    """Mean, std, min and max of `values` [N] within each group of `group_ids` [N] (any labels).
    Integer values are reduced as float (the dtype of the default float)."""
    if values.shape != group_ids.shape:
        raise ValueError(f"values {tuple(values.shape)} and group_ids {tuple(group_ids.shape)} must match")
    v = values if values.is_floating_point() else values.to(torch.get_default_dtype())
    if v.numel() == 0:
        empty = v.new_zeros(0)
        return GroupReduce(group_ids.new_zeros(0), group_ids.new_zeros(0, dtype=torch.long),
                           torch.zeros(0, dtype=torch.long), empty, empty, empty, empty)
    rows = group_rows(group_ids)
    order = list(rows)
    inv = torch.empty(len(v), dtype=torch.long)
    for k, label in enumerate(order):
        inv[rows[label]] = k
    n = len(order)
    count = torch.zeros(n, dtype=torch.long).index_add_(0, inv, torch.ones_like(inv))
    mean = v.new_zeros(n).index_add_(0, inv, v) / count.to(v.dtype)
    sq = v.new_zeros(n).index_add_(0, inv, (v - mean[inv]) ** 2)
    std = (sq / (count - 1).clamp(min=1).to(v.dtype)).sqrt()
    lo = v.new_full((n,), float("inf")).scatter_reduce(0, inv, v, reduce="amin")
    hi = v.new_full((n,), -float("inf")).scatter_reduce(0, inv, v, reduce="amax")
    return GroupReduce(torch.tensor(order, dtype=group_ids.dtype),
                       torch.tensor([rows[label][0] for label in order], dtype=torch.long),
                       count, mean, std, lo, hi)


__all__ = ["GroupReduce", "group_reduce", "group_rows"]
