"""Multi-turn dialogue tasks without tools: a guessing game and a simulated user.

Both name an environment of rftkit/envs/games.py; the texts those environments answer with
are defined here (tasks stand below envs), so a demonstration's observation segments are
exactly what the environment returns. One turn of the model is one line: the environments
stop a model turn at "\\n", and the answer format is the built-in one, "#" + answer.

agent_game (env "guess"), the LMRL-Gym style game with feedback (Abdulhai et al. 2023,
arXiv:2311.18232): a secret integer in [1, 2^difficulty]; each turn is a guess "#8\\n"; the
game answers "higher\\n" / "lower\\n" until the guess is right or the turns run out. The
outcome is "exact" on the last turn, so success within the budget needs the feedback:

    guess:1..16=#8\\nhigher\\n#12\\nlower\\n#10\\nhigher\\n#11\\n          (binary search, the demo)

agent_user (env "user"), a rule-based simulated user in the style of UserRL's clarification
gyms (Qian et al. 2025, arXiv:2509.19736): "pick a number" with hidden constraints that the
user reveals one per question ("?\\n"); "#<n>\\n" is the final answer, scored by the
"constraints" verifier (all constraints hold). Answering blind rarely satisfies them all:

    pick:1..99=?\\neven\\n?\\nfrom 20 to 29\\n?\\nmultiple of 3\\n#24\\n   (ask all, then answer)

Demonstrations: `demo` is the whole transcript, meta["demo_segments"] its [text, trained]
parts (model turns trained, observations not). Environment knobs (`step_penalty`,
`max_turns`) are task knobs passed on in meta["env_args"].
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from rftkit.tasks.base import TASKS, VERIFIERS, parse_answer
from rftkit.types import ANSWER_MARKER, Problem, Verdict

TURN_END = "\n"  # the environments' stop string: one model turn is one line
HIGHER, LOWER, SAY_NUMBER = "higher\n", "lower\n", "say a number\n"
NO_MORE, ASK_OR_ANSWER = "that is all\n", "ask ? or answer\n"
QUESTION = "?"
PICK_HI = 99  # agent_user picks from 1..PICK_HI
KINDS = ("parity", "range", "mult", "ends")  # at most one constraint of each kind


def read_number(text: str) -> int | None:
    """The integer after the last "#" of a turn; None unless it is plain digits without a
    leading zero (so the game's "right" and the "exact" verifier always agree)."""
    parsed = parse_answer(text)
    if parsed is None or not parsed.isascii() or not parsed.isdigit() or len(parsed) > 12:
        return None
    return int(parsed) if str(int(parsed)) == parsed else None


def guess_feedback(secret: int, guess: int) -> str | None:
    """The game's reply to a guess: None when it is right, else which way to go."""
    if guess == secret:
        return None
    return HIGHER if secret > guess else LOWER


def describe(c: dict[str, Any]) -> str:
    """What the simulated user says to reveal constraint `c` (one line)."""
    kind = c["kind"]
    if kind in ("even", "odd"):
        return f"{kind}\n"
    if kind == "range":
        return f"from {c['lo']} to {c['hi']}\n"
    if kind == "mult":
        return f"multiple of {c['k']}\n"
    return f"ends in {c['d']}\n"


def satisfies(c: dict[str, Any], n: int) -> bool:
    kind = c["kind"]
    if kind in ("even", "odd"):
        return n % 2 == (kind == "odd")
    if kind == "range":
        return c["lo"] <= n <= c["hi"]
    if kind == "mult":
        return n % c["k"] == 0
    return n % 10 == c["d"]


def _constraint(rng: random.Random, kind: str) -> dict[str, Any]:
    if kind == "parity":
        return {"kind": rng.choice(("even", "odd"))}
    if kind == "range":
        lo = rng.randint(1, PICK_HI - 9)
        return {"kind": "range", "lo": lo, "hi": lo + 9}
    if kind == "mult":
        return {"kind": "mult", "k": rng.randint(3, 9)}
    return {"kind": "ends", "d": rng.randint(0, 9)}


def episode_tag(rng: random.Random) -> str:
    """A per-problem tag at the start of the prompt: the hidden state (secret, constraints) is
    not in the prompt, so without it every problem of a difficulty would share one prompt, and
    pools keep prompts distinct (test prompts never appear in training)."""
    return f"g{rng.randrange(100_000):05d}:"


def _segments_problem(task: str, prompt: str, answer: str, verifier: str, difficulty: int, env: str,
                      segments: list[list], meta: dict[str, Any]) -> Problem:
    demo = "".join(text for text, _ in segments)
    return Problem(task=task, prompt=prompt, answer=answer, verifier=verifier, difficulty=difficulty, demo=demo,
                   source=task, env=env, meta={**meta, "demo_segments": segments})


@TASKS.register("agent_game")
class AgentGame:
    """Guess the secret number in [1, 2^difficulty] from higher/lower feedback (env "guess").

    Knobs (passed to the environment):
        step_penalty: reward added per model turn is -step_penalty (0: only the outcome counts;
            > 0 favours fewer guesses).
        max_turns: turns before the game ends unsolved; 0 = difficulty + 1, exactly what
            binary search needs in the worst case (the rollout's episode.max_turns must allow it).
    """

    name: ClassVar[str] = "agent_game"
    difficulty_doc: ClassVar[str] = "log2 of the range of the secret number"
    default_difficulty: ClassVar[tuple[int, int]] = (3, 4)
    default_ood: ClassVar[tuple[int, int]] = (5, 5)

    def __init__(self, *, step_penalty: float = 0.0, max_turns: int = 0) -> None:
        self.env_args = {"step_penalty": step_penalty, "max_turns": max_turns}

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        hi = 2 ** max(1, difficulty)
        secret = rng.randint(1, hi)
        segments: list[list] = []
        lo, top = 1, hi
        while True:  # binary search: the optimal strategy, at most difficulty + 1 guesses
            mid = (lo + top) // 2
            segments.append([f"{ANSWER_MARKER}{mid}{TURN_END}", True])
            reply = guess_feedback(secret, mid)
            if reply is None:
                break
            segments.append([reply, False])
            lo, top = (mid + 1, top) if reply == HIGHER else (lo, mid - 1)
        prompt = f"{episode_tag(rng)}guess:1..{hi}="
        return _segments_problem(self.name, prompt, str(secret), "exact", difficulty, "guess", segments,
                                 {"hi": hi, "env_args": dict(self.env_args)})


@TASKS.register("agent_user")
class AgentUser:
    """Pick a number in 1..99 for a simulated user whose `difficulty` constraints (at most one
    each of parity, a range of ten, a multiple of k, a last digit) are revealed one per
    question (env "user"); answer = the smallest number that satisfies them all.

    Knobs (passed to the environment):
        step_penalty: reward added per model turn is -step_penalty (> 0 makes questions cost).
        max_turns: turns before the user leaves unanswered; 0 = difficulty + 2 (one question
            per constraint, the answer, one spare).
    """

    name: ClassVar[str] = "agent_user"
    difficulty_doc: ClassVar[str] = "number of hidden constraints (1-4)"
    default_difficulty: ClassVar[tuple[int, int]] = (2, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 4)

    def __init__(self, *, step_penalty: float = 0.0, max_turns: int = 0) -> None:
        self.env_args = {"step_penalty": step_penalty, "max_turns": max_turns}

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        kinds = rng.sample(KINDS, min(len(KINDS), max(1, difficulty)))
        while True:  # rejection: constraints some number in 1..99 satisfies
            cons = [_constraint(rng, k) for k in kinds]
            fits = [n for n in range(1, PICK_HI + 1) if all(satisfies(c, n) for c in cons)]
            if fits:
                break
        segments: list[list] = []
        for c in cons:
            segments += [[QUESTION + TURN_END, True], [describe(c), False]]
        segments.append([f"{ANSWER_MARKER}{fits[0]}{TURN_END}", True])
        prompt = f"{episode_tag(rng)}pick:1..{PICK_HI}="
        return _segments_problem(self.name, prompt, str(fits[0]), "constraints", difficulty, "user", segments,
                                 {"lo": 1, "hi": PICK_HI, "constraints": cons, "env_args": dict(self.env_args)})


@VERIFIERS.register("constraints")
def verify_constraints(problem: Problem, completion: str) -> Verdict:
    """1 iff the answer is a number in [meta lo, meta hi] satisfying every constraint of
    meta["constraints"] (any such number, not only `problem.answer`)."""
    if parse_answer(completion) is None:
        return Verdict(0.0, None, f"no answer marker '{ANSWER_MARKER}'")
    n = read_number(completion)
    if n is None:
        return Verdict(0.0, None, "answer is not a number")
    if not problem.meta.get("lo", 1) <= n <= problem.meta.get("hi", PICK_HI):
        return Verdict(0.0, str(n), "out of range")
    for c in problem.meta.get("constraints", []):
        if not satisfies(c, n):
            return Verdict(0.0, str(n), f"violates {describe(c).strip()!r}")
    return Verdict(1.0, str(n), "correct")
