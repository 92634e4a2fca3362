"""The sampler registry and the base class every curriculum builds on (docs/curricula.md).

A sampler is a class `cls(pool, seed, *, knobs)` with `next(batch_size) -> list[int]`,
`update(stats) -> dict[str, float]`, `state_dict()` and `load_state_dict()`; its state
round-trips through JSON exactly (numpy RNG state via `bit_generator.state`).

`Curriculum` holds what most curricula share:
  - the pool's labels as arrays (source per prompt, difficulty per prompt) and its sources in
    `data.tasks` order; a source named in a knob with no example in the pool is a ValueError;
  - a `PromptPool` of per-prompt / per-source / per-level statistics, updated every step;
  - shuffled streams (sampling without replacement within a pass) over any index subset;
  - the fallback when a batch cannot be filled (knob `fallback`): "uniform" draws the batch
    uniformly and logs `curriculum/fallback` = 1, "error" raises a ValueError naming the
    sampler and the statistics that caused it. Never a silent retry loop.
Subclasses implement `_next(batch_size)` and `_learn(stats)` and list their own state keys.
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any, Protocol

import numpy as np

from rftkit.algos.groups import group_rows
from rftkit.data.prompt_stats import PromptPool, PromptStats
from rftkit.registry import Registry
from rftkit.types import Problem

SAMPLERS: Registry[type] = Registry("sampler")
FALLBACKS = ("uniform", "error")


class Sampler(Protocol):
    def next(self, batch_size: int) -> list[int]: ...

    def update(self, stats: list[PromptStats]) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(scores, dtype=float) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def digest(indices: list[int]) -> float:
    """A float fingerprint of the drawn indices (logged, so resumed runs can be compared)."""
    return float(zlib.crc32(np.asarray(indices, dtype=np.int64).tobytes()))


class Curriculum:
    """Base of the curricula: pool labels, statistics, streams, fallback, JSON state."""

    name = "curriculum"
    state_keys: tuple[str, ...] = ()  # attributes of the subclass saved as-is (JSON values)

    def __init__(self, pool: list[Problem], seed: int, *, fallback: str = "uniform", window: int = 4) -> None:
        if not pool:
            raise ValueError(f"sampler '{self.name}': the training pool is empty")
        if fallback not in FALLBACKS:
            raise ValueError(f"sampler '{self.name}': fallback must be one of {list(FALLBACKS)}, got {fallback!r}")
        self.fallback = fallback
        self.n = len(pool)
        self.source_of = [p.source or p.task for p in pool]
        rows = group_rows(self.source_of)
        self.sources = list(rows)  # data.tasks order
        self.by_source = {s: np.array(r) for s, r in rows.items()}
        self.difficulty = np.array([int(p.difficulty) for p in pool])
        self.levels = sorted({int(d) for d in self.difficulty})
        self.rng = np.random.default_rng(seed)
        self.stats = PromptPool(window=window)
        self.streams: dict[str, dict[str, Any]] = {}
        self.pending = self._fresh_pending()
        self.warned = False

    # ---- helpers for subclasses -------------------------------------------------------------
    def check_sources(self, names, knob: str) -> None:
        """Every source a knob names must have examples in the pool."""
        for s in names:
            if s not in self.by_source:
                raise ValueError(f"sampler '{self.name}': {knob} names source '{s}', which has zero examples in "
                                 f"the training pool (sources with examples: {self.sources})")

    def stream_take(self, key: str, candidates: np.ndarray, k: int) -> list[int]:
        """k indices from `candidates`, shuffled passes without replacement (stream `key`)."""
        st = self.streams.setdefault(key, {"order": [], "pos": 0})
        out: list[int] = []
        while len(out) < k:
            if st["pos"] >= len(st["order"]):
                st["order"] = [int(i) for i in self.rng.permutation(candidates)]
                st["pos"] = 0
            take = st["order"][st["pos"] : st["pos"] + k - len(out)]
            st["pos"] += len(take)
            out += take
        return out

    def take_by_group(self, groups: list[str], probs: np.ndarray, k: int, index_of: dict) -> list[int]:
        """k draws: a group per slot from `probs`, then a prompt of that group (its stream)."""
        choice = self.rng.choice(len(groups), size=k, p=probs)
        out: list[int] = []
        for g in range(len(groups)):
            m = int((choice == g).sum())
            if m:
                out += self.stream_take(f"group:{groups[g]}", index_of[groups[g]], m)
        return [out[j] for j in np.argsort(np.concatenate([np.flatnonzero(choice == g) for g in range(len(groups))]),
                                          kind="stable")]

    def cannot_fill(self, batch_size: int, reason: str, numbers: dict[str, float]) -> list[int]:
        """No batch can be built: raise (fallback=error) or draw uniformly and log it."""
        detail = ", ".join(f"{k}={v:.4g}" for k, v in numbers.items())
        msg = f"sampler '{self.name}' cannot fill a batch of {batch_size}: {reason} ({detail})"
        if self.fallback == "error":
            raise ValueError(msg + "; set the sampler's fallback: uniform to train on uniform draws instead")
        if not self.warned:
            warnings.warn(msg + "; falling back to uniform draws (curriculum/fallback = 1)", stacklevel=3)
            self.warned = True
        self.pending["fallback"] = 1.0
        for k, v in numbers.items():
            self.pending["why/" + k] = float(v)
        return self.stream_take("fallback", np.arange(self.n), batch_size)

    def shares(self, indices: list[int], prefix: str = "curriculum/source_frac/") -> dict[str, float]:
        counts = {s: 0 for s in self.sources}
        for i in indices:
            counts[self.source_of[i]] += 1
        return {prefix + s: c / max(1, len(indices)) for s, c in counts.items()}

    # ---- the sampler protocol ---------------------------------------------------------------
    def next(self, batch_size: int) -> list[int]:
        if batch_size < 1:
            raise ValueError(f"sampler '{self.name}': batch_size must be >= 1, got {batch_size}")
        out = [int(i) for i in self._next(batch_size)]
        self.pending["drawn"] += out
        return out

    def update(self, stats: list[PromptStats]) -> dict[str, float]:
        self.stats.observe(stats)
        metrics = self._learn(stats)
        drawn = self.pending["drawn"]
        metrics["curriculum/fallback"] = self.pending.get("fallback", 0.0)
        metrics.update({f"curriculum/fallback_{k}": v for k, v in self.pending.items() if k.startswith("why/")})
        if drawn:
            metrics["curriculum/mean_difficulty"] = float(self.difficulty[drawn].mean())
            metrics["curriculum/draw_digest"] = digest(drawn)
            metrics.update(self.shares(drawn))
        if stats:
            metrics["curriculum/batch_pass_rate"] = float(np.mean([s.reward_mean for s in stats]))
        metrics["curriculum/prompts_sampled"] = float(len(stats))
        self.pending = self._fresh_pending()
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "stats": self.stats.state_dict(),
                "streams": {k: {"order": list(v["order"]), "pos": v["pos"]} for k, v in self.streams.items()},
                "pending": {k: (list(v) if isinstance(v, list) else v) for k, v in self.pending.items()},
                "warned": self.warned, **{k: _plain(getattr(self, k)) for k in self.state_keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.stats.load_state_dict(state["stats"])
        self.streams = {k: {"order": [int(i) for i in v["order"]], "pos": int(v["pos"])}
                        for k, v in state["streams"].items()}
        self.pending = {k: (list(v) if isinstance(v, list) else v) for k, v in state["pending"].items()}
        self.warned = bool(state["warned"])
        for k in self.state_keys:
            setattr(self, k, state[k])
        self._after_load()

    # ---- for subclasses ---------------------------------------------------------------------
    def _fresh_pending(self) -> dict[str, Any]:
        return {"drawn": []}

    def _next(self, batch_size: int) -> list[int]:
        raise NotImplementedError

    def _learn(self, stats: list[PromptStats]) -> dict[str, float]:
        return {}

    def _after_load(self) -> None:
        """Rebuild derived attributes after the saved ones are restored."""


def _plain(value: Any) -> Any:
    """A JSON-ready copy (numpy scalars and arrays to Python floats and lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
