"""Demonstration sources: which completion an SFT-like objective imitates for a problem.

    DemoSource(problems, rng, *, knobs) -> list[str | None]   (None: no demonstration)

`task` uses the task's own solution trace; `noisy` corrupts a share of the answers, which
is how the built-in "base model" is made partly competent (catalog 3.0: pretraining on a
mixture of correct and corrupted traces sets the base's coverage).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rftkit.registry import Registry
from rftkit.tasks.base import corrupt_answer
from rftkit.types import Problem

DEMO_SOURCES: Registry[Callable[..., list[str | None]]] = Registry("demonstration source")


@DEMO_SOURCES.register("task")
def task_demos(problems: list[Problem], rng: random.Random) -> list[str | None]:
    return [p.demo for p in problems]


@DEMO_SOURCES.register("noisy")
def noisy_demos(problems: list[Problem], rng: random.Random, *, corrupt_prob: float = 0.5) -> list[str | None]:
    """Task demos with the answer corrupted (one character changed) with probability corrupt_prob."""
    out: list[str | None] = []
    for p in problems:
        demo = p.demo
        if demo is not None and rng.random() < corrupt_prob:
            demo = corrupt_answer(demo, rng)
        out.append(demo)
    return out
