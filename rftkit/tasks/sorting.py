"""Operations on a list of integers: sort (ascending or descending), max, min, sum.

Prompt "sort:12,5,73=" -> demo "#5,12,73"; the tag is the op ("sort", "sortdesc", "max",
"min", "sum"), the answer a comma-separated list (sort ops) or one integer.

Verifier "sorting": like "exact", but spaces in the answer are ignored ("5, 12, 73" is
right), since a pretrained LM readily writes them and they carry no meaning here. Numbers
must still be in canonical form ("05" is wrong) and in the right order.
"""

from __future__ import annotations

import random
from typing import ClassVar

from rftkit.tasks.base import TASKS, VERIFIERS, parse_answer
from rftkit.types import ANSWER_MARKER, Problem, Verdict

# op -> (prompt tag, function of the list giving the answer string)
OPS = {
    "sort": ("sort", lambda xs: ",".join(map(str, sorted(xs)))),
    "sort_desc": ("sortdesc", lambda xs: ",".join(map(str, sorted(xs, reverse=True)))),
    "max": ("max", lambda xs: str(max(xs))),
    "min": ("min", lambda xs: str(min(xs))),
    "sum": ("sum", lambda xs: str(sum(xs))),
}


@TASKS.register("sorting")
class Sorting:
    """Apply `op` to `difficulty` random integers.

    Knobs:
        op: "sort" (ascending), "sort_desc", "max", "min" or "sum".
        max_value: the integers are drawn uniformly from 0..max_value.
    """

    name: ClassVar[str] = "sorting"
    difficulty_doc: ClassVar[str] = "length of the list"
    default_difficulty: ClassVar[tuple[int, int]] = (3, 5)
    default_ood: ClassVar[tuple[int, int]] = (7, 8)

    def __init__(self, *, op: str = "sort", max_value: int = 99) -> None:
        if op not in OPS:
            raise ValueError(f"sorting op must be one of {sorted(OPS)}, got {op!r}")
        if max_value < 0:
            raise ValueError("sorting needs max_value >= 0")
        self.op = op
        self.max_value = max_value

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        xs = [rng.randint(0, self.max_value) for _ in range(max(1, difficulty))]
        tag, fn = OPS[self.op]
        answer = fn(xs)
        return Problem(
            task=self.name,
            prompt=f"{tag}:{','.join(map(str, xs))}=",
            answer=answer,
            verifier="sorting",
            difficulty=difficulty,
            demo=ANSWER_MARKER + answer,
            source=self.name,
            meta={"numbers": xs, "op": self.op},
        )


@VERIFIERS.register("sorting")
def verify_sorting(problem: Problem, completion: str) -> Verdict:
    """Score 1 iff the answer equals `problem.answer` once all whitespace is removed."""
    parsed = parse_answer(completion)
    if parsed is None:
        return Verdict(0.0, None, f"no answer marker '{ANSWER_MARKER}'")
    normalised = "".join(parsed.split())
    if normalised == "".join(problem.answer.split()):
        return Verdict(1.0, normalised, "correct")
    return Verdict(0.0, normalised, f"expected {problem.answer!r}")
