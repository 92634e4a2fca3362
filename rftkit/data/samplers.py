"""Samplers decide which training prompts each step holds.

A sampler is stateful: `next(batch_size)` returns pool indices, `update(stats)` learns from
the step's per-prompt statistics (curricula use it; uniform ignores it) and its state
round-trips through `state_dict()` as JSON, so a resumed run draws the same prompts.

`SAMPLERS`, `PromptStats` and the `Sampler` protocol live in `curriculum_base.py` /
`prompt_stats.py` and are re-exported here; importing this module registers every sampler:
uniform (below) and the curricula of docs/curricula.md (mixture, easy_to_hard, hard_to_easy,
band, adarft, dump, sec, pcl, alp_gmm, limr, few_shot).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rftkit.data.curriculum_base import SAMPLERS, Curriculum, Sampler
from rftkit.data.prompt_stats import PromptPool, PromptStats
from rftkit.types import Problem

__all__ = ["SAMPLERS", "Curriculum", "PromptPool", "PromptStats", "Sampler", "UniformSampler"]


@SAMPLERS.register("uniform")
class UniformSampler:
    """Shuffled passes over the pool (sampling without replacement within an epoch)."""

    def __init__(self, pool: list[Problem], seed: int) -> None:
        if not pool:  # an empty pool would make next() loop forever
            raise ValueError("sampler 'uniform': the training pool is empty")
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


# Registration of the curricula (each module registers its samplers in SAMPLERS on import).
from rftkit.data import alp_gmm, bandits, curricula, pcl, selection  # noqa: E402,F401
