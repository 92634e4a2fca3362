"""Per-prompt statistics and the prompt pool that curricula share (docs/curricula.md).

`PromptStats` is what one step learned about one sampled prompt (the loop builds them in
`train/step.py`). `PromptPool` keeps, for every prompt seen so far, a window of its
recent pass rates, reward stds and mean |advantage|, how often and when (which `update`
call) it was last seen; and, per source label and per difficulty level, a window of the same
quantities with a sample count. Samplers read it; its state is plain JSON (lists of floats,
string keys) so a checkpoint restores it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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


def _push(window: list[float], value: float, size: int) -> None:
    window.append(float(value))
    if len(window) > size:
        del window[: len(window) - size]


class _Agg:
    """A window of pass rates and |advantage| with a total count (one source or level)."""

    def __init__(self) -> None:
        self.n = 0
        self.pass_rates: list[float] = []
        self.adv: list[float] = []

    def add(self, s: PromptStats, size: int) -> None:
        self.n += 1
        _push(self.pass_rates, s.reward_mean, size)
        _push(self.adv, s.adv_abs_mean, size)

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "pass_rates": list(self.pass_rates), "adv": list(self.adv)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> _Agg:
        a = cls()
        a.n, a.pass_rates, a.adv = int(d["n"]), [float(x) for x in d["pass_rates"]], [float(x) for x in d["adv"]]
        return a


class PromptPool:
    """Statistics of the training pool, updated once per `update` call (one loop step).

    window: recent observations kept per prompt; agg_window: per source / difficulty level
    (DUMP keeps the last 300 advantages per data source, hence the default).
    """

    def __init__(self, window: int = 4, agg_window: int = 300) -> None:
        if window < 1 or agg_window < 1:
            raise ValueError(f"prompt pool windows must be >= 1, got window={window}, agg_window={agg_window}")
        self.window, self.agg_window = window, agg_window
        self.step = 0  # update calls so far
        self.prompts: dict[int, dict[str, Any]] = {}
        self.sources: dict[str, _Agg] = {}
        self.levels: dict[int, _Agg] = {}

    def observe(self, stats: list[PromptStats]) -> None:
        """Record one step's statistics (every prompt sampled in it) and advance the step."""
        for s in stats:
            rec = self.prompts.setdefault(int(s.index), {"pass_rates": [], "stds": [], "adv": [], "n": 0, "last": -1})
            _push(rec["pass_rates"], s.reward_mean, self.window)
            _push(rec["stds"], s.reward_std, self.window)
            _push(rec["adv"], s.adv_abs_mean, self.window)
            rec["n"] += 1
            rec["last"] = self.step
            self.sources.setdefault(s.source, _Agg()).add(s, self.agg_window)
            self.levels.setdefault(int(s.difficulty), _Agg()).add(s, self.agg_window)
        self.step += 1

    def pass_rate(self, index: int) -> float | None:
        """Mean of the prompt's recent pass rates, or None if it was never sampled."""
        rec = self.prompts.get(int(index))
        return float(np.mean(rec["pass_rates"])) if rec else None

    def pass_rates(self, n: int) -> np.ndarray:
        """[n] recent mean pass rate per pool index, NaN where never seen."""
        out = np.full(n, np.nan)
        for i, rec in self.prompts.items():
            out[i] = float(np.mean(rec["pass_rates"]))
        return out

    def source_adv(self, label: str) -> tuple[float, int]:
        """(mean |advantage| over the source's window (0 if empty), samples drawn from it)."""
        a = self.sources.get(label)
        if a is None or not a.adv:
            return 0.0, 0 if a is None else a.n
        return float(np.mean(a.adv)), a.n

    def summary(self) -> dict[str, float]:
        """Pool-level numbers for logs: prompts seen at least once, mean recent pass rate."""
        seen = len(self.prompts)
        rates = [float(np.mean(r["pass_rates"])) for r in self.prompts.values()]
        return {"curriculum/prompts_seen_total": float(seen),
                "curriculum/pool_pass_rate": float(np.mean(rates)) if rates else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "prompts": {str(i): {k: (list(v) if isinstance(v, list) else v) for k, v in r.items()}
                        for i, r in self.prompts.items()},
            "sources": {k: a.state() for k, a in self.sources.items()},
            "levels": {str(k): a.state() for k, a in self.levels.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.prompts = {int(i): {"pass_rates": [float(x) for x in r["pass_rates"]],
                                 "stds": [float(x) for x in r["stds"]], "adv": [float(x) for x in r["adv"]],
                                 "n": int(r["n"]), "last": int(r["last"])}
                        for i, r in state["prompts"].items()}
        self.sources = {k: _Agg.from_state(a) for k, a in state["sources"].items()}
        self.levels = {int(k): _Agg.from_state(a) for k, a in state["levels"].items()}
