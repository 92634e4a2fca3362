"""Integer arithmetic: add, subtract or multiply two random numbers.

Prompts look like "add:123+456=", "sub:12-345=", "mul:123*45="; the completion ends in
"#" + the integer result in canonical form (no leading zeros, "-" for negatives), e.g.
"#579" or "#-333". With `scratchpad=True` the demo first shows a compact column-by-column
trace (least significant digit first) so a tiny model can learn the carries:

    add:58+67=      8+7=15;5+6+1=12;#125       (column sum, carry folded into the next)
    sub:523-267=    13-7=6;11-6=5;4-2=2;#256   (top digit after borrows - bottom digit)
    sub:12-345=     neg;5-2=3;4-1=3;3-0=3;#-333 (negative: trace of 345-12)
    mul:123*45=     123*5=615;123*40=4920;615+4920=5535;#5535 (partial products, then sum)

Verifier: "exact". The canonical form is part of the task, so "0579" or "+579" score 0;
this keeps one right answer per problem, which is what pass@k and the RL reward count.
"""

from __future__ import annotations

import random
from typing import ClassVar

from rftkit.tasks.base import TASKS
from rftkit.types import ANSWER_MARKER, Problem

OPS = {"add": "+", "sub": "-", "mul": "*"}


def random_number(rng: random.Random, digits: int) -> int:
    """A uniform integer with exactly `digits` digits (0-9 when digits == 1)."""
    if digits <= 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def add_trace(a: int, b: int) -> str:
    """Columns from the right: 'x+y(+carry)=s;' where s's tens digit is the next carry."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(xs), len(ys))):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s};")
        carry = s // 10
    return "".join(steps)


def sub_trace(a: int, b: int) -> str:
    """Columns from the right of a - b (a >= b): 'top-bottom=d;' with top after borrowing.

    A borrowed-from column shows its top digit minus one; a borrowing column shows it plus
    ten, so every step is a single-digit fact the model can check.
    """
    xs, ys = str(a)[::-1], str(b)[::-1]
    steps, borrow = [], 0
    for i in range(len(xs)):
        top = int(xs[i]) - borrow
        y = int(ys[i]) if i < len(ys) else 0
        borrow = 1 if top < y else 0
        top += 10 * borrow
        steps.append(f"{top}-{y}={top - y};")
    return "".join(steps)


def mul_trace(a: int, b: int) -> str:
    """One shifted partial product per digit of b, then their sum (skipped for one digit)."""
    parts = []
    steps = []
    for i, d in enumerate(str(b)[::-1]):
        shifted = int(d) * 10**i
        parts.append(a * shifted)
        steps.append(f"{a}*{shifted}={a * shifted};")
    if len(parts) > 1:
        steps.append("+".join(str(p) for p in parts) + f"={sum(parts)};")
    return "".join(steps)


@TASKS.register("arithmetic")
class Arithmetic:
    """Two-operand integer arithmetic.

    Knobs:
        op: "add", "sub" or "mul". For "sub" the second operand may be larger, so answers
            can be negative. For "mul" the second operand has ceil(difficulty / 2) digits
            (3 x 2 digits at difficulty 3) to keep products and traces short.
        scratchpad: show the column-by-column trace (see the module docstring) before the
            answer marker in the demo.
    """

    name: ClassVar[str] = "arithmetic"
    difficulty_doc: ClassVar[str] = "digits per operand (mul: first operand; second has ceil(d/2))"
    default_difficulty: ClassVar[tuple[int, int]] = (1, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 5)

    def __init__(self, *, op: str = "add", scratchpad: bool = False) -> None:
        if op not in OPS:
            raise ValueError(f"arithmetic op must be one of {sorted(OPS)}, got {op!r}")
        self.op = op
        self.scratchpad = scratchpad

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        d = max(1, difficulty)
        a = random_number(rng, d)
        b = random_number(rng, (d + 1) // 2 if self.op == "mul" else d)
        value, trace = self._solve(a, b)
        answer = str(value)
        demo = (trace if self.scratchpad else "") + ANSWER_MARKER + answer
        return Problem(
            task=self.name,
            prompt=f"{self.op}:{a}{OPS[self.op]}{b}=",
            answer=answer,
            verifier="exact",
            difficulty=difficulty,
            demo=demo,
            source=self.name,
            meta={"a": a, "b": b, "op": self.op},
        )

    def _solve(self, a: int, b: int) -> tuple[int, str]:
        """The result and its scratchpad trace."""
        if self.op == "add":
            return a + b, add_trace(a, b)
        if self.op == "sub":
            if a >= b:
                return a - b, sub_trace(a, b)
            # Negative results are computed as -(b - a); "neg;" announces the swap.
            return a - b, "neg;" + sub_trace(b, a)
        return a * b, mul_trace(a, b)
