"""Countdown: combine the given numbers with + - * and parentheses to reach a target.

Prompt "countdown:3,7,12->15=", demo "#(12-7)*3". As in TinyZero, every given number must
be used exactly once (a number given twice may be used twice); there is no division, and
intermediate values may be negative. Targets come from a random expression over the
numbers, so a solution always exists; the demo is the first one a depth-first solver finds.

Verifier "countdown" parses the text after the last marker with a small recursive-descent
parser (never eval): integers, + - *, parentheses and spaces only, no unary minus, at most
MAX_EXPR_CHARS characters. It scores 1 iff the multiset of numbers equals the given one and
the value equals the target.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import ClassVar

from rftkit.tasks.base import TASKS, VERIFIERS, parse_answer
from rftkit.types import ANSWER_MARKER, Problem, Verdict

# Bounds parsing work: a 1 MB completion is rejected after one length check.
MAX_EXPR_CHARS = 200

# Precedence of an expression's top operator, to print only the parentheses needed.
ATOM, MUL, ADD = 3, 2, 1


def combine(left: tuple[str, int], op: str, right: tuple[str, int]) -> tuple[str, int]:
    """Join two (text, precedence) expressions with op, parenthesising where required."""
    (lt, lp), (rt, rp) = left, right
    if op == "*":
        lt = f"({lt})" if lp == ADD else lt
        rt = f"({rt})" if rp == ADD else rt
        return f"{lt}*{rt}", MUL
    if op == "-" and rp == ADD:  # a-(b+c) != a-b+c
        rt = f"({rt})"
    return f"{lt}{op}{rt}", ADD


Item = tuple[int, str, int]  # (value, text, precedence)


def solve(numbers: list[int], target: int) -> str | None:
    """Depth-first search over pairwise combinations; an expression using every number
    exactly once that evaluates to target, or None. Covers every binary expression tree."""

    def dfs(items: list[Item]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        for i in range(len(items)):
            for j in range(len(items)):
                if i == j:
                    continue
                rest = [it for k, it in enumerate(items) if k not in (i, j)]
                (av, at, ap), (bv, bt, bp) = items[i], items[j]
                # + and * are commutative: try them once per unordered pair.
                ops = ["+", "-", "*"] if i < j else ["-"]
                for op in ops:
                    value = av + bv if op == "+" else av - bv if op == "-" else av * bv
                    text, prec = combine((at, ap), op, (bt, bp))
                    found = dfs(rest + [(value, text, prec)])
                    if found is not None:
                        return found
        return None

    return dfs([(n, str(n), ATOM) for n in numbers])


def random_expression_value(rng: random.Random, numbers: list[int]) -> int:
    """Value of a random expression tree using each number once (random merges)."""
    values = list(numbers)
    while len(values) > 1:
        a = values.pop(rng.randrange(len(values)))
        b = values.pop(rng.randrange(len(values)))
        op = rng.choice("+-*")
        values.append(a + b if op == "+" else a - b if op == "-" else a * b)
    return values[0]


@TASKS.register("countdown")
class Countdown:
    """Reach a target from `difficulty` numbers, each used exactly once, with + - * ( ).

    Knobs:
        max_number: the given numbers are drawn uniformly from 1..max_number.
        max_target: targets lie in 1..max_target (expressions outside are re-drawn).
    """

    name: ClassVar[str] = "countdown"
    difficulty_doc: ClassVar[str] = "how many numbers are given (all must be used once)"
    default_difficulty: ClassVar[tuple[int, int]] = (3, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 4)

    def __init__(self, *, max_number: int = 20, max_target: int = 100) -> None:
        if max_number < 1 or max_target < 1:
            raise ValueError("countdown needs max_number >= 1 and max_target >= 1")
        self.max_number = max_number
        self.max_target = max_target

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        count = max(1, difficulty)
        while True:  # expected few draws: most random expressions land in 1..max_target
            numbers = [rng.randint(1, self.max_number) for _ in range(count)]
            target = random_expression_value(rng, numbers)
            if 1 <= target <= self.max_target:
                break
        expr = solve(numbers, target)
        assert expr is not None, "the generating expression is a solution"
        listed = ",".join(str(n) for n in numbers)
        return Problem(
            task=self.name,
            prompt=f"countdown:{listed}->{target}=",
            answer=expr,
            verifier="countdown",
            difficulty=difficulty,
            demo=ANSWER_MARKER + expr,
            source=self.name,
            meta={"numbers": numbers, "target": target},
        )


class ParseError(ValueError):
    pass


class ExprParser:
    """expr := term (('+'|'-') term)*; term := factor ('*' factor)*;
    factor := integer | '(' expr ')'. Records every integer literal it reads."""

    def __init__(self, text: str) -> None:
        self.text = "".join(text.split())  # spaces carry no meaning
        self.pos = 0
        self.numbers: list[int] = []

    def parse(self) -> int:
        if not self.text:
            raise ParseError("empty expression")
        value = self.expr()
        if self.pos != len(self.text):
            raise ParseError(f"unexpected {self.text[self.pos]!r}")
        return value

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expr(self) -> int:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> int:
        value = self.factor()
        while self.peek() == "*":
            self.pos += 1
            value *= self.factor()
        return value

    def factor(self) -> int:
        ch = self.peek()
        if ch == "(":
            self.pos += 1
            value = self.expr()
            if self.peek() != ")":
                raise ParseError("missing ')'")
            self.pos += 1
            return value
        start = self.pos
        while self.peek().isascii() and self.peek().isdigit():
            self.pos += 1
        if start == self.pos:
            raise ParseError(f"expected a number at {ch!r}" if ch else "expression ends early")
        number = int(self.text[start : self.pos])
        self.numbers.append(number)
        return number


def usage_error(used: list[int], given: list[int]) -> str | None:
    """Why `used` is not exactly the multiset `given`, or None if it is."""
    have, need = Counter(used), Counter(given)
    for n, k in have.items():
        if n not in need:
            return f"uses {n} not in numbers"
        if k > need[n]:
            return f"uses {n} {k} times, given {need[n]}"
    for n, k in need.items():
        if have[n] < k:
            return f"does not use {n}"
    return None


@VERIFIERS.register("countdown")
def verify_countdown(problem: Problem, completion: str) -> Verdict:
    """1 iff the answer expression uses meta['numbers'] exactly once each and equals
    meta['target']; 0 with a reason otherwise. Never raises on the completion."""
    parsed = parse_answer(completion)
    if parsed is None:
        return Verdict(0.0, None, f"no answer marker '{ANSWER_MARKER}'")
    if len(parsed) > MAX_EXPR_CHARS:
        return Verdict(0.0, None, f"unparsable: longer than {MAX_EXPR_CHARS} chars")
    parser = ExprParser(parsed)
    try:
        value = parser.parse()
    except (ParseError, RecursionError, ValueError) as err:
        return Verdict(0.0, None, f"unparsable: {err}")
    problem_numbers = [int(n) for n in problem.meta["numbers"]]
    target = int(problem.meta["target"])
    why = usage_error(parser.numbers, problem_numbers)
    if why is not None:
        return Verdict(0.0, parsed, why)
    if value != target:
        return Verdict(0.0, parsed, f"value {value} != target {target}")
    return Verdict(1.0, parsed, "correct")
