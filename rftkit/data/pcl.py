"""PCL: Prompt Curriculum Learning with a small value model (docs/curricula.md).

Gao et al. 2025 (arXiv:2510.01135): a value model V(x) ~ p_pi(x), the current policy's pass
rate on prompt x, is trained alongside the policy on the observed pass rates; each step draws
k * B candidate prompts uniformly and keeps the B whose predicted pass rate is closest to a
target tau = 0.5 (where a group's reward variance p(1 - p), and with it the share of samples
with non-zero advantage, is largest). The paper's V is an LM-sized value head; here it is a
small model: logistic regression on hashed character n-grams of the prompt (crc32, not
Python's salted hash, so features are the same in every process) plus one-hots of the
difficulty level and the source, trained by full-batch gradient steps on a replay buffer of
recent (prompt, pass rate) pairs (cross-entropy on soft targets: same minimiser as the
paper's MSE, p = E[r], for a logistic model). Weights are a JSON list of floats. What was
confirmed: docs/curricula.md.
"""

from __future__ import annotations

import zlib

import numpy as np

from rftkit.data.curriculum_base import SAMPLERS, Curriculum
from rftkit.data.prompt_stats import PromptStats
from rftkit.types import Problem


def ngram_ids(text: str, n_max: int, dim: int) -> list[int]:
    """Sorted distinct hashed ids of the character 1..n_max-grams of `text`."""
    grams = {text[i : i + n] for n in range(1, n_max + 1) for i in range(len(text) - n + 1)}
    return sorted({zlib.crc32(f"{len(g)}:{g}".encode()) % dim for g in grams})


@SAMPLERS.register("pcl")
class PCLSampler(Curriculum):
    """Prompt Curriculum Learning: pick prompts whose predicted pass rate is nearest `target`.

    Knobs: candidates (k: k * B prompts scored per batch), target (tau), dim and ngrams of
    the hashed features, lr / epochs / l2 of the per-step fit, buffer (recent observations
    the fit uses). Logs curriculum/value_mse (prediction error on the step's prompts, before
    fitting them), curriculum/pred_mean (mean predicted pass rate of the chosen prompts).
    """

    name = "pcl"
    state_keys = ("weights", "buffer")

    def __init__(self, pool: list[Problem], seed: int, *, candidates: int = 4, target: float = 0.5,
                 dim: int = 256, ngrams: int = 3, lr: float = 0.5, epochs: int = 20, l2: float = 1e-4,
                 buffer: int = 512, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        if candidates < 1 or dim < 1 or ngrams < 1 or buffer < 1 or not 0.0 <= target <= 1.0:
            raise ValueError(f"sampler 'pcl': need candidates, dim, ngrams, buffer >= 1 and 0 <= target <= 1 "
                             f"(got {candidates}, {dim}, {ngrams}, {buffer}, {target})")
        self.k, self.tau, self.dim, self.n_max = candidates, target, dim, ngrams
        self.lr, self.epochs, self.l2, self.buffer_size = lr, epochs, l2, buffer
        self.prompts = [p.prompt for p in pool]
        self.level_id = {d: dim + j for j, d in enumerate(self.levels)}
        self.source_id = {s: dim + len(self.levels) + j for j, s in enumerate(self.sources)}
        self.bias_id = dim + len(self.levels) + len(self.sources)
        self.weights = np.zeros(self.bias_id + 1)
        self.buffer: list[list[float]] = []  # [pool index, observed pass rate]
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def features(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(feature ids, values) of prompt i: n-grams scaled to unit norm, one-hots, bias."""
        if i not in self.cache:
            grams = ngram_ids(self.prompts[i], self.n_max, self.dim)
            ids = grams + [self.level_id[int(self.difficulty[i])], self.source_id[self.source_of[i]], self.bias_id]
            vals = [1.0 / np.sqrt(max(1, len(grams)))] * len(grams) + [1.0, 1.0, 1.0]
            self.cache[i] = (np.array(ids), np.array(vals))
        return self.cache[i]

    def _rows(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats = [self.features(int(i)) for i in indices]
        rows = np.concatenate([np.full(len(f[0]), r) for r, f in enumerate(feats)])
        return rows, np.concatenate([f[0] for f in feats]), np.concatenate([f[1] for f in feats])

    def predict(self, indices) -> np.ndarray:
        """Predicted pass rates (sigmoid of the linear score), summed in a fixed order."""
        rows, ids, vals = self._rows(indices)
        z = np.bincount(rows, weights=self.weights[ids] * vals, minlength=len(indices))
        return 1.0 / (1.0 + np.exp(-z))

    def fit(self) -> None:
        idx = [int(b[0]) for b in self.buffer]
        y = np.array([b[1] for b in self.buffer])
        rows, ids, vals = self._rows(idx)
        for _ in range(self.epochs):
            err = self.predict(idx) - y
            grad = np.bincount(ids, weights=err[rows] * vals, minlength=len(self.weights)) / len(idx)
            self.weights = self.weights - self.lr * (grad + self.l2 * self.weights)

    def _next(self, batch_size: int) -> list[int]:
        m = min(self.n, self.k * batch_size)
        cand = self.rng.choice(self.n, size=m, replace=False)
        pred = self.predict(cand)
        order = np.argsort(np.abs(pred - self.tau), kind="stable")
        picked = [int(cand[j]) for j in order[:batch_size]]
        while len(picked) < batch_size:  # a pool smaller than the batch
            picked += [int(cand[j]) for j in order[: batch_size - len(picked)]]
        self.pending.setdefault("pred", []).extend(float(pred[j]) for j in order[:batch_size])
        return picked

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        out = {}
        if self.pending.get("pred"):
            out["curriculum/pred_mean"] = float(np.mean(self.pending["pred"]))
        if stats:
            idx = [s.index for s in stats]
            y = np.array([s.reward_mean for s in stats])
            out["curriculum/value_mse"] = float(np.mean((self.predict(idx) - y) ** 2))
            self.buffer = (self.buffer + [[float(i), float(r)] for i, r in zip(idx, y)])[-self.buffer_size:]
            self.fit()
        return out

    def _after_load(self) -> None:
        self.weights = np.array(self.weights, dtype=float)
        self.buffer = [[float(a), float(b)] for a, b in self.buffer]
