"""Weight schedules: pure functions of training progress.

    ScheduleFn(progress: float in [0, 1], *, knobs) -> float

`progress` is step / steps within the stage. Used for objective weights (SFT/RL mixing,
KL coefficients) and, later, prefix ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rftkit.registry import Registry

SCHEDULES: Registry[Callable[..., float]] = Registry("schedule")


@SCHEDULES.register("constant")
def constant(progress: float, *, value: float = 1.0) -> float:
    return value


@SCHEDULES.register("linear")
def linear(progress: float, *, start: float = 1.0, end: float = 0.0) -> float:
    return start + (end - start) * min(max(progress, 0.0), 1.0)


@SCHEDULES.register("cosine")
def cosine(progress: float, *, start: float = 1.0, end: float = 0.0) -> float:
    p = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * p))


@SCHEDULES.register("step")
def step(progress: float, *, before: float = 1.0, after: float = 0.0, at: float = 0.5) -> float:
    return before if progress < at else after
