"""Samplers decide which training prompts each step holds (STYLE G10).

A sampler is stateful: `next(batch_size)` returns pool indices, `update(stats)` learns from
the step's per-prompt statistics (curricula use it; uniform ignores it) and its state
round-trips through `state_dict()` as JSON, so a resumed run draws the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rftkit.registry import Registry
from rftkit.types import Problem


@dataclass(frozen=True)
class PromptStats:
    """What a step learned about one sampled prompt (curricula read these).

    index: position in the training pool; task/source/difficulty: its labels; reward_mean:
    the group's pass rate (mean reward); reward_std: the group's reward std; adv_abs_mean:
    mean |advantage| over the group's completion tokens (0 for a dropped group).
    """

    index: int
    task: str
    source: str
    difficulty: int
    reward_mean: float
    reward_std: float
    adv_abs_mean: float


class Sampler(Protocol):
    def next(self, batch_size: int) -> list[int]: ...

    def update(self, stats: list[PromptStats]) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


SAMPLERS: Registry[type] = Registry("sampler")


@SAMPLERS.register("uniform")
class UniformSampler:
    """Shuffled passes over the pool (sampling without replacement within an epoch)."""

    def __init__(self, pool: list[Problem], seed: int) -> None:
        self.n = len(pool)
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []
        self.pos = 0
        self.epoch = 0

    def next(self, batch_size: int) -> list[int]:
        out: list[int] = []
        while len(out) < batch_size:
            if self.pos >= len(self.order):
                self.order = self.rng.permutation(self.n).tolist()
                self.pos = 0
                self.epoch += 1
            take = self.order[self.pos : self.pos + batch_size - len(out)]
            self.pos += len(take)
            out += take
        return out

    def update(self, stats: list[PromptStats]) -> dict[str, float]:
        return {"data/epoch": float(self.epoch)}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.pos, self.epoch = list(state["order"]), int(state["pos"]), int(state["epoch"])
