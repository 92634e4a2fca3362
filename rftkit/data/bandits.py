"""Bandit curricula over data sources / categories: DUMP and SEC (docs/curricula.md).

Both score an arm (a source, or a difficulty level for SEC) by the mean |advantage| of its
recent groups (a group whose rewards are all equal has zero advantage: nothing to learn) and
turn the scores into sampling probabilities; a batch draws an arm per slot, then a prompt of
that arm (shuffled passes within the arm).
"""

from __future__ import annotations

import math

import numpy as np

from rftkit.algos.groups import group_rows
from rftkit.data.curriculum_base import SAMPLERS, Curriculum, softmax
from rftkit.data.prompt_stats import PromptStats
from rftkit.types import Problem


@SAMPLERS.register("dump")
class DUMPSampler(Curriculum):
    """DUMP (Wang et al. 2025, arXiv:2504.09710): distribution-level UCB on mean |advantage|.

    Per source j: a sliding window of the last `window` |advantage| values, their mean A_j,
    and n_j = prompts drawn from j so far (N = sum n_j). Score and probabilities, recomputed
    after every step:
        s_j = A_j + exploration * sqrt(2 ln(N + 1) / (n_j + 1)),   p = softmax(s / temperature)
    The window and n_j count prompts (one mean |advantage| per group); with `explore_unseen` a
    source never drawn gets all the probability (shared among the unseen ones) until it has been
    seen once. `sources` restricts the arms (None = every source in the pool). How this compares
    with the official code: docs/curricula.md. Logs curriculum/source_prob/<label>.
    """

    name = "dump"
    state_keys = ("windows", "counts")

    def __init__(self, pool: list[Problem], seed: int, *, window: int = 300, exploration: float = 1.0,
                 temperature: float = 0.1, explore_unseen: bool = True, sources: list[str] | None = None,
                 fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        if window < 1 or temperature <= 0:
            raise ValueError(f"sampler 'dump': need window >= 1 and temperature > 0, got {window}, {temperature}")
        self.arms = [str(s) for s in (sources or self.sources)]
        self.check_sources(self.arms, "sources")
        self.window, self.exploration, self.temperature = window, exploration, temperature
        self.explore_unseen = explore_unseen
        self.windows: dict[str, list[float]] = {s: [] for s in self.arms}
        self.counts: dict[str, int] = {s: 0 for s in self.arms}

    def scores(self) -> np.ndarray:
        total = sum(self.counts.values())
        return np.array([(float(np.mean(self.windows[s])) if self.windows[s] else 0.0)
                         + self.exploration * math.sqrt(2 * math.log(total + 1) / (self.counts[s] + 1))
                         for s in self.arms])

    def probs(self) -> np.ndarray:
        unseen = np.array([self.counts[s] == 0 for s in self.arms])
        if self.explore_unseen and unseen.any():
            return unseen / unseen.sum()
        return softmax(self.scores(), self.temperature)

    def _next(self, batch_size: int) -> list[int]:
        return self.take_by_group(self.arms, self.probs(), batch_size, self.by_source)

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        for s in stats:
            if s.source in self.counts:
                self.windows[s.source] = (self.windows[s.source] + [float(s.adv_abs_mean)])[-self.window:]
                self.counts[s.source] += 1
        out = {f"curriculum/source_prob/{s}": float(p) for s, p in zip(self.arms, self.probs())}
        out.update({f"curriculum/ucb/{s}": float(v) for s, v in zip(self.arms, self.scores())})
        return out


@SAMPLERS.register("sec")
class SECSampler(Curriculum):
    """Self-Evolving Curriculum (Chen et al. 2025, arXiv:2505.14970): a bandit over categories.

    Arms: the pool's sources (`category: source`) or difficulty levels (`category: difficulty`).
    After a step, the reward of arm c is the mean over its sampled prompts of their mean
    |advantage| (the paper's "absolute advantage" learning-gain proxy); the arm's value takes
    one TD(0) step:  Q(c) <- alpha * r(c) + (1 - alpha) * Q(c)  (arms not sampled keep Q);
    the next batch draws categories from the Boltzmann distribution p(c) ∝ exp(Q(c) / tau).
    The Boltzmann form and the defaults alpha = 0.5, tau = 1 are unconfirmed (docs/curricula.md).
    Logs curriculum/source_prob/<label> or curriculum/level_prob/d<k>, and curriculum/q/<arm>.
    """

    name = "sec"
    state_keys = ("q",)

    def __init__(self, pool: list[Problem], seed: int, *, category: str = "source", alpha: float = 0.5,
                 tau: float = 1.0, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        if category not in ("source", "difficulty"):
            raise ValueError(f"sampler 'sec': category must be 'source' or 'difficulty', got {category!r}")
        if not 0 < alpha <= 1 or tau <= 0:
            raise ValueError(f"sampler 'sec': need 0 < alpha <= 1 and tau > 0, got alpha={alpha}, tau={tau}")
        self.category, self.alpha, self.tau = category, alpha, tau
        if category == "source":
            self.arms, self.members = list(self.sources), dict(self.by_source)
        else:
            self.arms = [f"d{d}" for d in self.levels]
            self.members = {f"d{d}": np.flatnonzero(self.difficulty == d) for d in self.levels}
        self.q: dict[str, float] = {a: 0.0 for a in self.arms}

    def arm_of(self, s: PromptStats) -> str:
        return s.source if self.category == "source" else f"d{int(s.difficulty)}"

    def probs(self) -> np.ndarray:
        return softmax(np.array([self.q[a] for a in self.arms]), self.tau)

    def _next(self, batch_size: int) -> list[int]:
        return self.take_by_group(self.arms, self.probs(), batch_size, self.members)

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        for a, rows in group_rows(self.arm_of(s) for s in stats).items():
            if a in self.q:
                r = float(np.mean([stats[i].adv_abs_mean for i in rows]))
                self.q[a] = float(self.alpha * r + (1 - self.alpha) * self.q[a])
        prefix = "curriculum/source_prob/" if self.category == "source" else "curriculum/level_prob/"
        out = {prefix + a: float(p) for a, p in zip(self.arms, self.probs())}
        out.update({f"curriculum/q/{a}": self.q[a] for a in self.arms})
        return out
