"""Demonstration sources some findings need (registered in rftkit's DEMO_SOURCES).

Loaded by path through a config's `imports: [str(PARTS)]` (common.PARTS): rftkit imports the
file once under a hashed module name. Never import this module by its package name, which
would register the names a second time (a duplicate-name error).

    misformat  the task demo with its answer *format* broken at a rate (the "#" marker dropped,
               or junk appended after the answer): the digits stay right but the exact verifier
               scores 0; optionally the answer is also corrupted (as `noisy`). Base of F9.
    verbose    the scratchpad demo with every step restated ("8+7=15;8+7=15;..."): redundant but
               correct, the long-SFT traces of F18.
"""

from __future__ import annotations

from rftkit.data.demos import DEMO_SOURCES, _Stateless
from rftkit.tasks.base import corrupt_answer
from rftkit.types import ANSWER_MARKER

JUNK = "!?.|"
"""Characters appended after an answer: in the built-in alphabet, never part of an answer."""


def break_format(demo: str, rng) -> str:
    """The demo with its answer marker dropped (half the time) or 1-2 junk characters after it."""
    head, marker, answer = demo.rpartition(ANSWER_MARKER)
    if not marker:
        return demo
    if rng.random() < 0.5:
        return head + answer
    return head + marker + answer + "".join(rng.choice(JUNK) for _ in range(rng.randint(1, 2)))


def restate(demo: str, repeat: int) -> str:
    """Every scratchpad step ("x+y=s;") written `repeat` times; the answer once."""
    head, marker, answer = demo.rpartition(ANSWER_MARKER)
    steps = [s for s in head.split(";") if s]
    return "".join(f"{s};" * repeat for s in steps) + marker + answer


@DEMO_SOURCES.register("misformat")
class MisformatDemos(_Stateless):
    """Task demos whose answer format is broken with probability `p` (see `break_format`) and
    whose answer is corrupted (one character, as `noisy`) with probability `corrupt_prob`,
    independently. Metric: mix/misformat_frac."""

    def __init__(self, pool, *, p: float = 0.5, corrupt_prob: float = 0.0) -> None:
        super().__init__(pool)
        if not (0.0 <= p <= 1.0 and 0.0 <= corrupt_prob <= 1.0):
            raise ValueError("misformat: p and corrupt_prob must lie in [0, 1]")
        self.p, self.corrupt_prob = p, corrupt_prob

    def __call__(self, problems, batch, rng):
        out, broken = [], 0
        for pr in problems:
            if pr.demo is None:
                continue
            demo = corrupt_answer(pr.demo, rng) if rng.random() < self.corrupt_prob else pr.demo
            if rng.random() < self.p:
                demo, broken = break_format(demo, rng), broken + 1
            out.append((pr, demo))
        return out, {"mix/misformat_frac": broken / max(1, len(out))}


@DEMO_SOURCES.register("verbose")
class VerboseDemos(_Stateless):
    """Scratchpad demos with every step restated `repeat` times (redundant, still correct)."""

    def __init__(self, pool, *, repeat: int = 2) -> None:
        super().__init__(pool)
        if repeat < 1:
            raise ValueError("verbose: repeat must be at least 1")
        self.repeat = repeat

    def __call__(self, problems, batch, rng):
        return [(p, restate(p.demo, self.repeat)) for p in problems if p.demo is not None], {}
