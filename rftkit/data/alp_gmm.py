"""ALP-GMM: absolute learning progress over the difficulty knob (docs/curricula.md).

Portelas et al. 2019, "Teacher algorithms for curriculum learning of Deep RL in continuously
parameterized environments" (arXiv:1910.07224):
  - after an episode on task parameter p with reward r: ALP = |r - r_nearest|, with the
    nearest previously seen task (0 while <= 5 tasks were seen; `history_size` > 0 caps how
    many are kept);
  - every `fit_rate` (250) episodes, once `fit_rate` episodes were seen, fit Gaussian
    mixtures with k = 2..`max_components` components (full covariance) on the last `fit_rate`
    (p, ALP) points and keep the one with the lowest AIC;
  - sample: uniformly during the first `fit_rate` episodes and with probability
    `random_ratio` (0.2); otherwise choose a Gaussian with probability proportional to its
    mean ALP, draw from it, drop the ALP coordinate, clip to the bounds.
Here an episode is one sampled prompt (its reward = the group's pass rate), the task
parameter is the prompt's difficulty scaled to [0, 1] over the pool's levels, and a sampled
parameter maps to a prompt of the nearest level. Difficulties are integers, so the nearest
previous task is usually a tie; the most recent one wins (ALP = change since that level was
last seen). `fit_gmm` is a small numpy EM (k-means style random init, reg_covar 1e-6), since
sklearn is not a dependency. How this compares with the official code: docs/curricula.md.
"""

from __future__ import annotations

import numpy as np

from rftkit.data.curriculum_base import SAMPLERS, Curriculum
from rftkit.data.prompt_stats import PromptStats
from rftkit.types import Problem


def _log_gauss(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """[n, k] log densities of full-covariance Gaussians."""
    n, d = x.shape
    out = np.empty((n, len(means)))
    for j, (mu, cov) in enumerate(zip(means, covs)):
        diff = x - mu
        _, logdet = np.linalg.slogdet(cov)
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        out[:, j] = -0.5 * (d * np.log(2 * np.pi) + logdet + maha)
    return out


def fit_gmm(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 100, tol: float = 1e-4,
            reg: float = 1e-6) -> tuple[dict, float]:
    """EM for a k-component full-covariance mixture; returns (params, AIC)."""
    n, d = x.shape
    means = x[rng.choice(n, size=k, replace=False)].copy()
    base = np.atleast_2d(np.cov(x.T)) + reg * np.eye(d)
    covs = np.array([base.copy() for _ in range(k)])
    weights = np.full(k, 1.0 / k)
    prev = -np.inf
    for _ in range(iters):
        logp = _log_gauss(x, means, covs) + np.log(weights)
        top = logp.max(axis=1, keepdims=True)
        ll = (top + np.log(np.exp(logp - top).sum(axis=1, keepdims=True)))[:, 0]
        resp = np.exp(logp - ll[:, None])
        nk = resp.sum(axis=0) + 1e-10
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        covs = np.array([((x - means[j]) * resp[:, j : j + 1]).T @ (x - means[j]) / nk[j] + reg * np.eye(d)
                         for j in range(k)])
        total = float(ll.sum())
        if total - prev < tol:
            break
        prev = total
    params = k * (d + d * (d + 1) / 2) + k - 1
    return {"weights": weights.tolist(), "means": means.tolist(), "covs": covs.tolist()}, 2 * params - 2 * total


@SAMPLERS.register("alp_gmm")
class ALPGMMSampler(Curriculum):
    """ALP-GMM teacher over the difficulty knob (knobs: fit_rate, random_ratio, max_components,
    history_size: 0 = keep every (task, reward) for the nearest-neighbour ALP). Logs
    curriculum/alp_mean, curriculum/gmm_components, curriculum/random_share."""

    name = "alp_gmm"
    state_keys = ("history", "tasks_alps", "gmm", "episodes", "fits")

    def __init__(self, pool: list[Problem], seed: int, *, fit_rate: int = 250, random_ratio: float = 0.2,
                 max_components: int = 6, history_size: int = 0, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        if fit_rate < 4 or max_components < 2 or history_size < 0 or not 0.0 <= random_ratio <= 1.0:
            raise ValueError(f"sampler 'alp_gmm': need fit_rate >= 4, max_components >= 2, history_size >= 0, "
                             f"0 <= random_ratio <= 1 (got {fit_rate}, {max_components}, {history_size}, "
                             f"{random_ratio})")
        self.seed, self.fit_rate, self.random_ratio = seed, fit_rate, random_ratio
        self.max_components, self.history_size = max_components, history_size
        self.lo, self.span = self.levels[0], max(1, self.levels[-1] - self.levels[0])
        self.level_arr = np.array(self.levels, dtype=float)
        self.members = {d: np.flatnonzero(self.difficulty == d) for d in self.levels}
        self.history: list[list[float]] = []     # [task, reward]: where the ALP's nearest neighbour is found
        self.tasks_alps: list[list[float]] = []  # [task, ALP], the last fit_rate episodes
        self.gmm: dict | None = None
        self.episodes = 0
        self.fits = 0

    def alp(self, task: float, reward: float) -> float:
        if len(self.history) <= 5:
            return 0.0
        past = np.array(self.history)
        dist = np.abs(past[:, 0] - task)
        nearest = len(dist) - 1 - int(np.argmin(dist[::-1]))  # the most recent among ties
        return abs(reward - float(past[nearest, 1]))

    def fit(self) -> None:
        x = np.array(self.tasks_alps[-self.fit_rate :])
        best, best_aic = None, np.inf
        for k in range(2, min(self.max_components, len(x) - 1) + 1):
            params, aic = fit_gmm(x, k, np.random.default_rng([self.seed, self.fits, k]))
            if aic < best_aic:
                best, best_aic = params, aic
        self.gmm = best
        self.fits += 1

    def sample_task(self) -> tuple[float, bool]:
        """A task parameter in [0, 1] and whether it was drawn uniformly."""
        if self.gmm is None or self.episodes < self.fit_rate or self.rng.random() < self.random_ratio:
            return float(self.rng.random()), True
        means, covs = np.array(self.gmm["means"]), np.array(self.gmm["covs"])
        alps = np.maximum(means[:, -1], 0.0)
        if alps.sum() == 0:
            j = int(self.rng.integers(len(alps)))
        else:
            j = int(self.rng.choice(len(alps), p=alps / alps.sum()))
        draw = self.rng.multivariate_normal(means[j], covs[j])
        return float(np.clip(draw[0], 0.0, 1.0)), False

    def _next(self, batch_size: int) -> list[int]:
        counts = {d: 0 for d in self.levels}
        randoms = 0
        for _ in range(batch_size):
            task, uniform = self.sample_task()
            randoms += uniform
            level = self.levels[int(np.argmin(np.abs(self.level_arr - (self.lo + task * self.span))))]
            counts[level] += 1
        self.pending["random"] = self.pending.get("random", 0) + randoms
        out: list[int] = []
        for d, c in counts.items():
            if c:
                out += self.stream_take(f"level:{d}", self.members[d], c)
        return out

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        alps = []
        for s in stats:
            task = (int(s.difficulty) - self.lo) / self.span
            alps.append(self.alp(task, float(s.reward_mean)))
            self.history.append([float(task), float(s.reward_mean)])
            if self.history_size and len(self.history) > self.history_size:
                del self.history[: len(self.history) - self.history_size]
            self.tasks_alps = (self.tasks_alps + [[float(task), float(alps[-1])]])[-self.fit_rate :]
            self.episodes += 1
            if self.episodes >= self.fit_rate and self.episodes % self.fit_rate == 0:
                self.fit()
        drawn = len(self.pending["drawn"])
        return {"curriculum/alp_mean": float(np.mean(alps)) if alps else 0.0,
                "curriculum/gmm_components": float(len(self.gmm["weights"])) if self.gmm else 0.0,
                "curriculum/random_share": self.pending.get("random", 0) / max(1, drawn)}
