"""A user-defined task in its own file: parity of a bit string.

Prompt "parity:10110=" -> demo "#odd" (three 1s). The file registers a task and its
verifier by name, exactly as the built-in tasks do; nothing in rftkit has to change.

Use it from a recipe by importing the file and naming the task:

    imports: [examples/my_task.py]   # files loaded (registering their parts) before use
    tasks: [parity]                  # knobs (here `trace`) go in the task entry's params

Or directly in Python:

    import importlib.util, random
    spec = importlib.util.spec_from_file_location("my_task", "examples/my_task.py")
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    from rftkit.tasks.base import TASKS, verify
    problem = TASKS.get("parity")().sample(random.Random(0), 6)
    assert verify(problem, problem.demo).correct

Conventions to keep (see rftkit/tasks/base.py): lowercase prompts in the model's alphabet,
a task tag at the start, a completion that ends in "#" + answer, and a pure verifier that
never raises on any completion.
"""

from __future__ import annotations

import random
from typing import ClassVar

from rftkit.tasks.base import TASKS, VERIFIERS, parse_answer
from rftkit.types import ANSWER_MARKER, Problem, Verdict


@TASKS.register("parity")
class Parity:
    """Is the number of 1s in a random bit string even or odd?

    Knobs:
        trace: show the running parity after each bit (e.g. "0110;") before the answer,
            which turns one global decision into a chain of local ones.
    """

    name: ClassVar[str] = "parity"
    difficulty_doc: ClassVar[str] = "number of bits"
    default_difficulty: ClassVar[tuple[int, int]] = (4, 8)
    default_ood: ClassVar[tuple[int, int]] = (12, 16)

    def __init__(self, *, trace: bool = False) -> None:
        self.trace = trace

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        bits = "".join(rng.choice("01") for _ in range(max(1, difficulty)))
        running, acc = [], 0
        for b in bits:
            acc ^= int(b)
            running.append(str(acc))
        answer = "odd" if acc else "even"
        demo = ("".join(running) + ";" if self.trace else "") + ANSWER_MARKER + answer
        return Problem(
            task=self.name,
            prompt=f"parity:{bits}=",
            answer=answer,
            verifier="parity",
            difficulty=difficulty,
            demo=demo,
            source=self.name,
            meta={"bits": bits},
        )


@VERIFIERS.register("parity")
def verify_parity(problem: Problem, completion: str) -> Verdict:
    """1 iff the answer is "even"/"odd" (any case) and matches the count of 1s."""
    parsed = parse_answer(completion)
    if parsed is None:
        return Verdict(0.0, None, f"no answer marker '{ANSWER_MARKER}'")
    word = parsed.lower()
    if word not in ("even", "odd"):
        return Verdict(0.0, None, "answer is not 'even' or 'odd'")
    expected = "odd" if problem.meta["bits"].count("1") % 2 else "even"
    if word != expected:
        return Verdict(0.0, word, f"expected {expected!r}")
    return Verdict(1.0, word, "correct")
