"""Data selection from a short uniform warm-up: LIMR and 1-shot / few-shot RLVR (docs/curricula.md).

Both samplers first draw uniformly (shuffled passes) for `warmup_epochs` epochs, recording
each prompt's accuracy per epoch (the mean group pass rate of its draws in that epoch). An
epoch is one pass over the warm-up prompts (`epoch_steps: 0` = ceil(prompts / batch) steps)
or `epoch_steps` steps. The warm-up prompts are the whole pool, or with `subset` > 0 a fixed
random subset of that many: LIMR and 1-shot RLVR score a dataset from a full multi-epoch RL
run, which a large pool and a short budget cannot afford, so `subset` keeps every warm-up
prompt revisited once per epoch (a budget adaptation, not part of either paper). Gaps are
handled as LIMR's `process_accuracy_sequences`: a missing epoch takes the next epoch's value
when that one is present, and prompts whose trajectory still has a gap are not scored. Then
each picks its prompts and trains only on them.
"""

from __future__ import annotations

import math

import numpy as np

from rftkit.data.curriculum_base import SAMPLERS, Curriculum
from rftkit.data.prompt_stats import PromptStats
from rftkit.types import Problem


class _HistorySelector(Curriculum):
    """Uniform warm-up recording per-epoch accuracies, then a fixed selection."""

    state_keys = ("traj", "spe", "selected", "scores")

    def __init__(self, pool: list[Problem], seed: int, *, warmup_epochs: int = 3, epoch_steps: int = 0,
                 subset: int = 0, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        if warmup_epochs < 1 or epoch_steps < 0 or subset < 0:
            raise ValueError(f"sampler '{self.name}': need warmup_epochs >= 1, epoch_steps >= 0 and subset >= 0, "
                             f"got {warmup_epochs}, {epoch_steps}, {subset}")
        self.warmup_epochs, self.epoch_steps = warmup_epochs, epoch_steps
        self.warmup_pool = (np.sort(self.rng.choice(self.n, size=subset, replace=False)) if 0 < subset < self.n
                            else np.arange(self.n))
        self.traj: dict[str, dict[str, list[float]]] = {}  # prompt -> epoch -> [sum of pass rates, count]
        self.spe: int = epoch_steps or 0  # steps per epoch (0 = not known before the first batch)
        self.selected: list[int] | None = None
        self.scores: list[float] = []  # the selected prompts' scores

    def trajectories(self) -> tuple[list[int], np.ndarray]:
        """(prompt indices, [prompts, epochs] accuracies) of the prompts with a full trajectory."""
        idx, rows = [], []
        for key, per_epoch in self.traj.items():
            seq = [per_epoch[str(e)][0] / per_epoch[str(e)][1] if str(e) in per_epoch else -1.0
                   for e in range(self.warmup_epochs)]
            for e in range(len(seq) - 1):  # LIMR's fill: a gap takes the next epoch's value
                if seq[e] == -1.0 and seq[e + 1] != -1.0:
                    seq[e] = seq[e + 1]
            if -1.0 not in seq:
                idx.append(int(key))
                rows.append(seq)
        return idx, np.array(rows, dtype=float).reshape(len(rows), self.warmup_epochs)

    def _next(self, batch_size: int) -> list[int]:
        if not self.spe:
            self.spe = math.ceil(len(self.warmup_pool) / batch_size)
        if self.selected is None:
            return self.stream_take("warmup", self.warmup_pool, batch_size)
        if not self.selected:
            return self.cannot_fill(batch_size, f"no prompt has a complete {self.warmup_epochs}-epoch accuracy "
                                    "trajectory after the warm-up", {"scored": 0.0, "seen": float(len(self.traj))})
        return self._draw(batch_size)

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        if self.selected is None:
            spe = self.spe or max(1, math.ceil(len(self.warmup_pool) / max(1, len(stats))))
            epoch = str((self.stats.step - 1) // spe)
            for s in stats:
                rec = self.traj.setdefault(str(s.index), {}).setdefault(epoch, [0.0, 0])
                rec[0], rec[1] = rec[0] + float(s.reward_mean), rec[1] + 1
            if self.stats.step >= self.warmup_epochs * spe:
                idx, acc = self.trajectories()
                self.selected, self.scores = self._select(idx, acc)
        if self.selected is None:
            return {"curriculum/phase": 0.0}
        out = {"curriculum/phase": 1.0, "curriculum/selected": float(len(self.selected))}
        if self.scores:
            out["curriculum/score_min"] = float(min(self.scores))
            out["curriculum/score_mean"] = float(np.mean(self.scores))
        out.update(self.shares(self.selected, "curriculum/selected_frac/"))
        return out

    def _select(self, idx: list[int], acc: np.ndarray) -> tuple[list[int], list[float]]:
        raise NotImplementedError

    def _draw(self, batch_size: int) -> list[int]:
        raise NotImplementedError


def lim_scores(acc: np.ndarray) -> np.ndarray:
    """LIMR's learning-impact score: s_i = 1 - sum_k (a_ik - abar_k)^2 / sum_k (1 - abar_k)^2."""
    mean = acc.mean(axis=0)
    denom = float(((1.0 - mean) ** 2).sum())
    return 1.0 - ((acc - mean) ** 2).sum(axis=1) / max(denom, 1e-12)


def top(idx: list[int], scores: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """The k best by score (descending), ties by pool index."""
    order = sorted(range(len(idx)), key=lambda j: (-float(scores[j]), idx[j]))[:k]
    return [idx[j] for j in order], [float(scores[j]) for j in order]


@SAMPLERS.register("limr")
class LIMRSampler(_HistorySelector):
    """LIMR (Li et al. 2025, arXiv:2502.11886): keep the prompts whose accuracy trajectory
    follows the model's average learning curve (learning impact measurement).

        abar_k = mean_i a_ik,   s_i = 1 - sum_k (a_ik - abar_k)^2 / sum_k (1 - abar_k)^2
    over per-epoch accuracy sequences (with the gap fill above): a normalised squared distance to
    the mean trajectory, not a correlation. Here: `threshold` (None = no cut) then the top
    `keep_fraction` of the scored prompts; training then draws shuffled passes over the kept
    prompts. Checked against the official code: docs/curricula.md.
    """

    name = "limr"

    def __init__(self, pool: list[Problem], seed: int, *, warmup_epochs: int = 3, epoch_steps: int = 0,
                 subset: int = 0, keep_fraction: float = 0.2, threshold: float | None = None,
                 fallback: str = "uniform") -> None:
        super().__init__(pool, seed, warmup_epochs=warmup_epochs, epoch_steps=epoch_steps, subset=subset,
                         fallback=fallback)
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"sampler 'limr': keep_fraction must be in (0, 1], got {keep_fraction}")
        self.keep_fraction, self.threshold = keep_fraction, threshold

    def _select(self, idx: list[int], acc: np.ndarray) -> tuple[list[int], list[float]]:
        if not idx:
            return [], []
        scores = lim_scores(acc)
        if self.threshold is not None:
            keep = [j for j in range(len(idx)) if scores[j] >= self.threshold]
            idx, scores = [idx[j] for j in keep], scores[keep]
        return top(idx, scores, math.ceil(self.keep_fraction * len(idx)))

    def _draw(self, batch_size: int) -> list[int]:
        return self.stream_take("selected", np.array(self.selected), batch_size)


@SAMPLERS.register("few_shot")
class FewShotSampler(_HistorySelector):
    """1-shot / few-shot RLVR (Wang et al. 2025, arXiv:2504.20571): after the warm-up keep the
    `k` prompts with the highest historical variance of their per-epoch training accuracy and
    train only on them, each batch their copies (as the paper duplicates its one example to
    the batch size). Confirmed against the official code (ypwang61/One-Shot-RLVR
    data/data_selection.py, method 'std': np.std of each example's accuracy list, sorted
    descending, top n, repeated); std and variance give the same ranking.
    """

    name = "few_shot"
    state_keys = _HistorySelector.state_keys + ("cursor",)

    def __init__(self, pool: list[Problem], seed: int, *, k: int = 1, warmup_epochs: int = 3, epoch_steps: int = 0,
                 subset: int = 0, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, warmup_epochs=warmup_epochs, epoch_steps=epoch_steps, subset=subset,
                         fallback=fallback)
        if k < 1:
            raise ValueError(f"sampler 'few_shot': k must be >= 1, got {k}")
        self.k, self.cursor = k, 0

    def _select(self, idx: list[int], acc: np.ndarray) -> tuple[list[int], list[float]]:
        return top(idx, acc.std(axis=1), self.k) if idx else ([], [])

    def _draw(self, batch_size: int) -> list[int]:
        out = [self.selected[(self.cursor + j) % len(self.selected)] for j in range(batch_size)]
        self.cursor = (self.cursor + batch_size) % len(self.selected)
        return out
