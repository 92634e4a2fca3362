"""Rule-based curricula: fixed mixture, staged schedules, pass-rate band, AdaRFT (docs/curricula.md).

    mixture       fixed ratios over sources
    easy_to_hard  a schedule over difficulty levels (or sources) by update calls (= loop steps)
    hard_to_easy  the same schedule in reverse (the "reverse curriculum" baseline of SEC)
    band          online difficulty filtering: prompts whose recent pass rate is in [low, high]
    adarft        AdaRFT: a target difficulty moved by the batch reward, prompts nearest to it
"""

from __future__ import annotations

import math

import numpy as np

from rftkit.data.curriculum_base import SAMPLERS, Curriculum
from rftkit.data.prompt_stats import PromptStats
from rftkit.types import Problem


@SAMPLERS.register("mixture")
class MixtureSampler(Curriculum):
    """Fixed ratios over sources: each batch holds round(w_s * B) prompts of source s.

    weights: {source label: ratio} (labels of data.tasks; unlisted sources are not drawn;
    None = equal ratios). Counts are floor(w_s * B) plus the remainder given to sources drawn
    in proportion to their fractional parts; within a source, shuffled passes.
    Logs curriculum/source_prob/<label> (the configured ratio).
    """

    name = "mixture"

    def __init__(self, pool: list[Problem], seed: int, *, weights: dict[str, float] | None = None,
                 fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        w = {s: 1.0 for s in self.sources} if weights is None else {str(k): float(v) for k, v in weights.items()}
        self.check_sources(w, "weights")
        if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"sampler 'mixture': weights must be >= 0 with a positive sum, got {w}")
        self.groups = [s for s in self.sources if w.get(s, 0.0) > 0]
        total = sum(w[s] for s in self.groups)
        self.probs = np.array([w[s] / total for s in self.groups])

    def _next(self, batch_size: int) -> list[int]:
        exact = self.probs * batch_size
        counts = np.floor(exact).astype(int)
        rest = batch_size - int(counts.sum())
        if rest:
            frac = exact - counts
            counts[self.rng.choice(len(counts), size=rest, replace=False, p=frac / frac.sum())] += 1
        out: list[int] = []
        for s, c in zip(self.groups, counts):
            out += self.stream_take(f"source:{s}", self.by_source[s], int(c))
        return [out[j] for j in self.rng.permutation(len(out))]

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        return {f"curriculum/source_prob/{s}": float(p) for s, p in zip(self.groups, self.probs)}


class _Staged(Curriculum):
    """A schedule over ordered levels: stage c = floor(step * m / total_steps) of m levels."""

    reverse = False

    def __init__(self, pool: list[Problem], seed: int, *, total_steps: int = 40, by: str = "difficulty",
                 levels: list | None = None, cumulative: bool = False, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        if total_steps < 1:
            raise ValueError(f"sampler '{self.name}': total_steps must be >= 1, got {total_steps}")
        if by not in ("difficulty", "source"):
            raise ValueError(f"sampler '{self.name}': by must be 'difficulty' or 'source', got {by!r}")
        self.total_steps, self.by, self.cumulative = total_steps, by, cumulative
        if by == "source":
            order = [str(x) for x in (levels or self.sources)]
            self.check_sources(order, "levels")
            self.members = [self.by_source[s] for s in order]
        else:
            order = [int(x) for x in (levels or self.levels)]
            missing = [d for d in order if d not in self.levels]
            if missing:
                raise ValueError(f"sampler '{self.name}': levels {missing} have zero examples in the training pool "
                                 f"(difficulties present: {self.levels})")
            self.members = [np.flatnonzero(self.difficulty == d) for d in order]
        self.order = order[::-1] if self.reverse else order
        if self.reverse:
            self.members = self.members[::-1]

    def stage(self) -> int:
        m = len(self.order)
        return min(m - 1, self.stats.step * m // self.total_steps)

    def _next(self, batch_size: int) -> list[int]:
        c = self.stage()
        parts = self.members[: c + 1] if self.cumulative else [self.members[c]]
        return self.stream_take(f"stage:{c}", np.concatenate(parts), batch_size)

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        c = self.stage()  # the stage the next batch comes from
        out = {"curriculum/stage": float(c), "curriculum/progress": min(1.0, self.stats.step / self.total_steps)}
        if self.by == "difficulty":
            out["curriculum/stage_difficulty"] = float(self.order[c])
        return out


@SAMPLERS.register("easy_to_hard")
class EasyToHardSampler(_Staged):
    """Staged easy->hard: levels in increasing difficulty (or sources in `levels` / data.tasks
    order with by: source); the step count (update calls) moves through them evenly over
    `total_steps`; `cumulative` keeps the earlier levels in the mix. Logs curriculum/stage."""

    name = "easy_to_hard"


@SAMPLERS.register("hard_to_easy")
class HardToEasySampler(_Staged):
    """Staged hard->easy: the easy_to_hard schedule reversed (same knobs)."""

    name = "hard_to_easy"
    reverse = True


@SAMPLERS.register("band")
class BandSampler(Curriculum):
    """Online difficulty filtering (Bae et al. 2025, arXiv:2504.03380, "balanced" filtering).

    Keep prompts whose recent pass rate (mean of the last `window` group pass rates) lies in
    [low, high]. A never-seen prompt is, per `unseen`: "allow"ed, "deny"ed, or judged by the
    recent mean pass rate of its difficulty "level" or its "source" (the pool's aggregate
    windows; allowed while that level / source has no statistics either). With `max_age` > 0 a
    prompt's own statistics expire that many steps after it was last seen (it is judged as
    unseen again, so a once too-hard prompt is re-tested). Draws walk shuffled passes over the
    pool, skipping filtered prompts; logs curriculum/filtered_fraction (skipped / examined) and
    curriculum/eligible_fraction. The paper filters on the current rollouts' accuracy (that is
    the loop's `rl.zero_variance: refill`); this is the cheap sampler-side variant on history,
    and the level / source estimate for unseen prompts is rftkit's addition (on a pool much
    larger than the prompts a run sees, "allow" filters almost nothing). The band [0.2, 0.8] is
    a default, not the paper's verified value.
    """

    name = "band"
    UNSEEN = ("allow", "deny", "level", "source")

    def __init__(self, pool: list[Problem], seed: int, *, low: float = 0.2, high: float = 0.8, window: int = 4,
                 unseen: str = "allow", max_age: int = 0, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback, window=window)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"sampler 'band': need 0 <= low <= high <= 1, got low={low}, high={high}")
        if unseen not in self.UNSEEN:
            raise ValueError(f"sampler 'band': unseen must be one of {list(self.UNSEEN)}, got {unseen!r}")
        self.low, self.high, self.unseen, self.max_age = low, high, unseen, max_age

    def unseen_estimate(self) -> np.ndarray:
        """[n] the pass rate an unseen prompt is judged by (NaN = no estimate: allowed)."""
        if self.unseen == "level":
            means = {d: float(np.mean(a.pass_rates)) for d, a in self.stats.levels.items() if a.pass_rates}
            return np.array([means.get(int(d), np.nan) for d in self.difficulty])
        means = {s: float(np.mean(a.pass_rates)) for s, a in self.stats.sources.items() if a.pass_rates}
        return np.array([means.get(s, np.nan) for s in self.source_of])

    def eligible(self) -> tuple[np.ndarray, dict[str, float]]:
        rates = np.full(self.n, np.nan)
        for i, rec in self.stats.prompts.items():
            if self.max_age <= 0 or self.stats.step - rec["last"] <= self.max_age:
                rates[i] = float(np.mean(rec["pass_rates"]))
        seen = ~np.isnan(rates)
        r = np.where(seen, rates, 0.5)
        in_band = (r >= self.low) & (r <= self.high)
        if self.unseen in ("level", "source"):
            est = self.unseen_estimate()
            e = np.where(np.isnan(est), 0.5, est)
            unseen_ok = np.isnan(est) | ((e >= self.low) & (e <= self.high))
        else:
            unseen_ok = np.full(self.n, self.unseen == "allow")
        ok = np.where(seen, in_band, unseen_ok)
        numbers = {"eligible": float(ok.sum()), "seen": float(seen.sum()), "unseen": float((~seen).sum()),
                   "unseen_filtered": float((~seen & ~unseen_ok).sum()),
                   "below_low": float((seen & (r < self.low)).sum()),
                   "above_high": float((seen & (r > self.high)).sum())}
        return ok, numbers

    def _next(self, batch_size: int) -> list[int]:
        ok, numbers = self.eligible()
        if not ok.any():
            return self.cannot_fill(batch_size, f"no prompt has a recent pass rate in [{self.low}, {self.high}]"
                                    + ("" if self.unseen == "allow" else f" (unseen prompts: {self.unseen})"), numbers)
        st = self.streams.setdefault("pass", {"order": [], "pos": 0})
        out: list[int] = []
        examined, passes = 0, 0
        while len(out) < batch_size:
            if st["pos"] >= len(st["order"]):
                if passes == 1:
                    break
                st["order"], st["pos"], passes = [int(i) for i in self.rng.permutation(self.n)], 0, passes + 1
            i = st["order"][st["pos"]]
            st["pos"] += 1
            examined += 1
            if ok[i]:
                out.append(i)
        self.pending["examined"] = self.pending.get("examined", 0) + examined
        self.pending["skipped"] = self.pending.get("skipped", 0) + examined - len(out)
        self.pending["eligible"] = numbers["eligible"]
        if len(out) < batch_size:  # fewer eligible prompts than the batch: repeat some
            extra = self.rng.choice(np.flatnonzero(ok), size=batch_size - len(out))
            self.pending["repeated"] = self.pending.get("repeated", 0) + len(extra)
            out += [int(i) for i in extra]
        return out

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        p = self.pending
        return {"curriculum/filtered_fraction": p.get("skipped", 0) / max(1, p.get("examined", 0)),
                "curriculum/eligible_fraction": p.get("eligible", float(self.n)) / self.n,
                "curriculum/repeated": float(p.get("repeated", 0))}


@SAMPLERS.register("adarft")
class AdaRFTSampler(Curriculum):
    """AdaRFT (Shi et al. 2025, arXiv:2504.05520): adaptive target difficulty.

    After each step with batch reward R (mean group pass rate):
        T <- clip(T + eta * tanh(alpha * (R - beta)), d_min, d_max)
    and the next batch is the B problems whose difficulty is closest to T (ties at random).
    Difficulties are the tasks' integer knobs, so eta defaults to half the pool's difficulty range
    (the paper's 50 / 100) and d_min / d_max / initial default to the pool's range and its minimum.
    Sources (the authors' README and poster): docs/curricula.md.
    """

    name = "adarft"
    state_keys = ("target",)

    def __init__(self, pool: list[Problem], seed: int, *, beta: float = 0.5, alpha: float = 2.0,
                 eta: float | None = None, d_min: float | None = None, d_max: float | None = None,
                 initial: float | None = None, fallback: str = "uniform") -> None:
        super().__init__(pool, seed, fallback=fallback)
        self.d_min = float(self.levels[0] if d_min is None else d_min)
        self.d_max = float(self.levels[-1] if d_max is None else d_max)
        if self.d_max < self.d_min:
            raise ValueError(f"sampler 'adarft': d_max ({self.d_max}) < d_min ({self.d_min})")
        self.beta, self.alpha = beta, alpha
        self.eta = (self.d_max - self.d_min) / 2 if eta is None else float(eta)
        self.target = float(self.d_min if initial is None else initial)

    def _next(self, batch_size: int) -> list[int]:
        dist = np.abs(self.difficulty - self.target)
        order = np.lexsort((self.rng.random(self.n), dist))
        picked = order[: min(batch_size, self.n)].tolist()
        while len(picked) < batch_size:  # a pool smaller than the batch
            picked += order[: batch_size - len(picked)].tolist()
        return picked

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        out = {}
        if stats:
            reward = float(np.mean([s.reward_mean for s in stats]))
            step = self.eta * math.tanh(self.alpha * (reward - self.beta))
            self.target = float(min(self.d_max, max(self.d_min, self.target + step)))
            out["curriculum/batch_reward"] = reward
        out["curriculum/target_difficulty"] = self.target
        return out
