"""The benchmark's task for rftkit: "a+b=" with a, b in 10..99; reward 1.0 for the exact sum.

Loaded by the benchmark worker (or a recipe's `imports: [benchmarks/addsum_task.py]`). Unlike the
built-in tasks there is no "#" answer marker: the completion is the sum itself, as TRL's side
of the benchmark sees it.
"""

from __future__ import annotations

import random
from typing import ClassVar

from rftkit.tasks.base import TASKS, VERIFIERS
from rftkit.types import Problem, Verdict


@TASKS.register("addsum")
class AddSum:
    name: ClassVar[str] = "addsum"
    difficulty_doc: ClassVar[str] = "unused (a, b always in 10..99)"
    default_difficulty: ClassVar[tuple[int, int]] = (2, 2)
    default_ood: ClassVar[tuple[int, int]] = (2, 2)

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return Problem(task=self.name, prompt=f"{a}+{b}=", answer=str(a + b), verifier="addsum_exact",
                       difficulty=difficulty, demo=str(a + b), source=self.name, meta={})


@VERIFIERS.register("addsum_exact")
def verify_addsum(problem: Problem, completion: str) -> Verdict:
    got = completion.strip()
    ok = got == problem.answer
    return Verdict(1.0 if ok else 0.0, got, "correct" if ok else f"expected {problem.answer!r}")
