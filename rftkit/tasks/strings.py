"""String transformations of a random lowercase word, single or composed.

Prompt "str:reverse(abcd)=" -> demo "#dcba". Composition reads like function application,
"str:reverse(sort(dcba))=" means reverse(sort("dcba")); its demo lists the intermediate
results innermost first, then the answer: "abcd;#dcba".

Ops (amounts are written into the op name, so the prompt says everything needed):
    reverse     "abc" -> "cba"
    rotateK     left rotation by K: rotate1("abcd") -> "bcda"
    sort        letters in alphabetical order
    caesarK     shift every letter K places, wrapping z -> a: caesar1("az") -> "ba"
    dedupe      keep the first occurrence of each letter: "abcab" -> "abc"

Verifier: "exact".
"""

from __future__ import annotations

import random
import string
from typing import ClassVar

from rftkit.tasks.base import TASKS
from rftkit.types import ANSWER_MARKER, Problem

LETTERS = string.ascii_lowercase
ALL_OPS = ("reverse", "rotate", "sort", "caesar", "dedupe")


def apply_op(op: str, amount: int, s: str) -> str:
    """Apply one op; `amount` is used by rotate and caesar only."""
    if op == "reverse":
        return s[::-1]
    if op == "rotate":
        k = amount % len(s) if s else 0
        return s[k:] + s[:k]
    if op == "sort":
        return "".join(sorted(s))
    if op == "caesar":
        return "".join(LETTERS[(LETTERS.index(c) + amount) % 26] for c in s)
    if op == "dedupe":
        return "".join(dict.fromkeys(s))
    raise ValueError(f"unknown string op {op!r}")


@TASKS.register("strings")
class Strings:
    """Apply `compose` random ops from `ops` to a random word of `difficulty` letters.

    Knobs:
        ops: the ops to draw from (subset of reverse, rotate, sort, caesar, dedupe).
        compose: how many ops are nested: 1 = f(x), 2 = f(g(x)), ... Consecutive ops differ
            when more than one op is allowed.
        max_shift: rotate and caesar amounts are drawn from 1..max_shift and shown in the
            prompt as "rotate2" / "caesar3".
    """

    name: ClassVar[str] = "strings"
    difficulty_doc: ClassVar[str] = "length of the input word"
    default_difficulty: ClassVar[tuple[int, int]] = (3, 6)
    default_ood: ClassVar[tuple[int, int]] = (8, 10)

    def __init__(
        self, *, ops: list[str] | None = None, compose: int = 1, max_shift: int = 3
    ) -> None:
        ops = list(ALL_OPS) if ops is None else list(ops)
        unknown = [op for op in ops if op not in ALL_OPS]
        if unknown or not ops:
            raise ValueError(f"strings ops must be a non-empty subset of {ALL_OPS}, got {ops}")
        if compose < 1 or max_shift < 1:
            raise ValueError("strings needs compose >= 1 and max_shift >= 1")
        self.ops = ops
        self.compose = compose
        self.max_shift = max_shift

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        length = max(1, difficulty)
        chain: list[tuple[str, int]] = []  # innermost first
        for _ in range(self.compose):
            choices = [op for op in self.ops if not chain or op != chain[-1][0]] or self.ops
            op = rng.choice(choices)
            amount = rng.randint(1, self.max_shift) if op in ("rotate", "caesar") else 0
            chain.append((op, amount))
        word = self._word(rng, length, dedupe=any(op == "dedupe" for op, _ in chain))
        steps = [word]
        for op, amount in chain:
            steps.append(apply_op(op, amount, steps[-1]))
        call = word
        for op, amount in chain:
            call = f"{op}{amount or ''}({call})"
        trace = "".join(f"{s};" for s in steps[1:-1])
        return Problem(
            task=self.name,
            prompt=f"str:{call}=",
            answer=steps[-1],
            verifier="exact",
            difficulty=difficulty,
            demo=trace + ANSWER_MARKER + steps[-1],
            source=self.name,
            meta={"word": word, "ops": [f"{op}{amount or ''}" for op, amount in chain]},
        )

    @staticmethod
    def _word(rng: random.Random, length: int, dedupe: bool) -> str:
        """Random letters; for dedupe they come from a pool of ~2/3 of the length so the
        word almost always has repeats (over 26 letters dedupe would mostly be identity)."""
        pool = rng.sample(LETTERS, max(1, (2 * length) // 3)) if dedupe else LETTERS
        return "".join(rng.choice(pool) for _ in range(length))
