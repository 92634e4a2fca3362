"""The task interface: a task couples a problem generator with the verifier of its answers.

A task is a class registered in `TASKS`; its keyword-only constructor arguments are its
knobs (set from YAML `params`). `sample(rng, difficulty)` returns one `Problem`; the integer
`difficulty` is the task's main knob (digits, list length, ...) described by
`difficulty_doc`. Every problem names its verifier, a pure function registered in
`VERIFIERS` with the signature `(problem, completion) -> Verdict`, so a stored problem can
be re-scored without its task object.

Completion format shared by the built-in tasks: an optional trace, then ANSWER_MARKER, then
the answer, e.g. "3+4=7,carry0\n#57". `parse_answer` extracts the text after the last marker.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import ClassVar, Protocol, runtime_checkable

from rftkit.registry import Registry
from rftkit.types import ANSWER_MARKER, Problem, Verdict


@runtime_checkable
class Task(Protocol):
    """name: registered name; difficulty_doc: what `difficulty` means; default_difficulty:
    (low, high) in-distribution range; default_ood: (low, high) out-of-distribution range."""

    name: ClassVar[str]
    difficulty_doc: ClassVar[str]
    default_difficulty: ClassVar[tuple[int, int]]
    default_ood: ClassVar[tuple[int, int]]

    def sample(self, rng: random.Random, difficulty: int) -> Problem: ...


VerifierFn = Callable[[Problem, str], Verdict]

TASKS: Registry[type] = Registry("task")
VERIFIERS: Registry[VerifierFn] = Registry("verifier")


def parse_answer(completion: str) -> str | None:
    """Text after the last ANSWER_MARKER, stripped; None if there is no marker."""
    if ANSWER_MARKER not in completion:
        return None
    return completion.rsplit(ANSWER_MARKER, 1)[1].strip()


@VERIFIERS.register("exact")
def verify_exact(problem: Problem, completion: str) -> Verdict:
    """Score 1 iff the parsed answer equals `problem.answer` exactly (after strip)."""
    parsed = parse_answer(completion)
    if parsed is None:
        return Verdict(0.0, None, f"no answer marker '{ANSWER_MARKER}'")
    if parsed == problem.answer.strip():
        return Verdict(1.0, parsed, "correct")
    return Verdict(0.0, parsed, f"expected {problem.answer!r}")


def verify(problem: Problem, completion: str) -> Verdict:
    """Score a completion with the verifier its problem names."""
    return VERIFIERS.get(problem.verifier)(problem, completion)


def corrupt_answer(demo: str, rng: random.Random) -> str:
    """Change one character of the answer part of a demo to another of the same class.

    Used to build a partly competent "base model" (the built-in testbed): pretraining on a mixture of
    correct and corrupted demonstrations sets how often the base samples a right answer.
    """
    head, marker, answer = demo.rpartition(ANSWER_MARKER)
    tail = answer[len(answer.rstrip()):]  # a turn's closing newline is not part of the answer
    answer = answer.rstrip()
    if not marker or not answer:
        return demo
    i = rng.randrange(len(answer))
    ch = answer[i]
    if ch.isdigit():
        pool = "0123456789"
    elif ch.isalpha():
        pool = "abcdefghijklmnopqrstuvwxyz"
    else:
        return demo
    new = rng.choice([c for c in pool if c != ch])
    return head + marker + answer[:i] + new + answer[i + 1 :] + tail
