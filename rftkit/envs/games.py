"""Dialogue environments without tools: a guessing game and a rule-based simulated user.

Their tasks and texts are in rftkit/tasks/agent_dialogue.py (agent_game, agent_user). A model
turn is one line (`stop = ("\\n",)`); the outcome is the problem's verifier on the last turn,
the per-turn reward is -step_penalty (0 by default).

"guess" (LMRL-Gym style, Abdulhai et al. 2023, arXiv:2311.18232): turn "#<n>" is a guess of
the secret (`problem.answer`, in [1, meta["hi"]]); the reply is "higher\\n" / "lower\\n", done
when it is right or after `max_turns` turns. A turn that is not "#" + a number gets
"say a number\\n". info: guesses, invalid, solved.

"user" (a simulated user as in UserRL's gyms, Qian et al. 2025, arXiv:2509.19736, rule-based
here): a turn with "?" and no "#" is a question, answered with the next hidden constraint of
meta["constraints"] ("that is all\\n" once all are told); a turn with "#" is the final answer
and ends the dialogue; anything else gets "ask ? or answer\\n". info: questions, invalid,
answered.
"""

from __future__ import annotations

from rftkit.envs.base import ENVS, EnvBase, StepResult
from rftkit.tasks.agent_dialogue import (
    ASK_OR_ANSWER,
    NO_MORE,
    QUESTION,
    SAY_NUMBER,
    TURN_END,
    describe,
    guess_feedback,
    read_number,
)
from rftkit.types import ANSWER_MARKER, Problem


@ENVS.register("guess")
class GuessEnv(EnvBase):
    """Knobs: step_penalty (reward -step_penalty per turn); max_turns (0 = bit length of
    meta["hi"], the worst case of binary search: 5 turns for 1..16)."""

    stop = (TURN_END,)
    observation_role = "user"  # a chat model sees the game / the user speak, not a tool

    def __init__(self, problem: Problem, *, step_penalty: float = 0.0, max_turns: int = 0) -> None:
        super().__init__(problem)
        self.secret = int(problem.answer)
        self.max_turns = max_turns or int(problem.meta["hi"]).bit_length()
        self.step_penalty = float(step_penalty)
        self.turns = 0

    def step(self, action: str) -> StepResult:
        self.turns += 1
        reward = -self.step_penalty
        guess = read_number(action)
        if guess is None:
            return StepResult(SAY_NUMBER, reward, self.turns >= self.max_turns, {"invalid": 1})
        reply = guess_feedback(self.secret, guess)
        if reply is None:
            return StepResult("", reward, True, {"guesses": 1, "solved": 1})
        return StepResult(reply, reward, self.turns >= self.max_turns, {"guesses": 1})


@ENVS.register("user")
class UserEnv(EnvBase):
    """Knobs: step_penalty (reward -step_penalty per turn, so each question costs);
    max_turns (0 = number of constraints + 2: ask each, answer, one spare)."""

    stop = (TURN_END,)
    observation_role = "user"  # a chat model sees the game / the user speak, not a tool

    def __init__(self, problem: Problem, *, step_penalty: float = 0.0, max_turns: int = 0) -> None:
        super().__init__(problem)
        self.constraints = list(problem.meta["constraints"])
        self.max_turns = max_turns or len(self.constraints) + 2
        self.step_penalty = float(step_penalty)
        self.turns = self.revealed = 0

    def step(self, action: str) -> StepResult:
        self.turns += 1
        reward = -self.step_penalty
        if ANSWER_MARKER in action:  # the final answer, right or wrong: the verifier scores it
            return StepResult("", reward, True, {"answered": 1})
        if QUESTION not in action:
            return StepResult(ASK_OR_ANSWER, reward, self.turns >= self.max_turns, {"invalid": 1})
        if self.revealed < len(self.constraints):
            reply = describe(self.constraints[self.revealed])
            self.revealed += 1
        else:
            reply = NO_MORE
        return StepResult(reply, reward, self.turns >= self.max_turns, {"questions": 1})
