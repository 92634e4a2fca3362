"""The environment API: what a multi-turn task talks to between the model's turns.

An environment is a class registered in `ENVS`, created once per episode from its problem:

    env = ENVS.get(problem.env)(problem, **problem.meta.get("env_args", {}))
    first = env.reset()          # None: the problem's prompt is the first observation
    result = env.step(text)      # after each model turn: StepResult(observation, reward, done, info)

The rollout loop (rftkit/envs/episodes.py) appends `observation` to the context (as a tool /
user turn; its tokens are never trained), asks the model for the next turn, and stops when
`done`, or at the turn, token or context budget. `stop` lists strings that end a model turn
(e.g. "</calc>" for the built-in model's tag syntax; chat models end a turn with eos). The
outcome is scored by the problem's verifier on the last model turn (`Episode.answer`), so
a one-turn task is the special case "no env": the first turn is done.

Contract, enforced by the loop (never by trusting the environment): `step` runs on a worker
thread with a timeout; an exception, a hang or a result that is not a StepResult ends the
episode, counted in env/errors or env/timeouts, and never stops training. `info` values that
are numbers are summed over the episode and logged as env/<key> (tool_calls, tool_errors,
call_score, ...). Environments are pure parts: they import nothing above `tasks/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from rftkit.registry import Registry
from rftkit.types import Problem

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class StepResult:
    """observation: text for the model's context ("" when done); reward: this turn's reward
    (added to the verifier's outcome); done: the episode is over; info: numbers to log."""

    observation: str = ""
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Environment(Protocol):
    stop: ClassVar[tuple[str, ...]]

    def reset(self) -> str | Messages | None: ...

    def step(self, action: str) -> StepResult: ...


ENVS: Registry[type] = Registry("environment")


class EnvBase:
    """Convenience base: keeps the problem, no stop strings, the problem's prompt first.
    `observation_role`: the chat role a chat template renders observations as ("tool" for
    tool results, "user" for a game's or a simulated user's replies)."""

    stop: ClassVar[tuple[str, ...]] = ()
    observation_role: ClassVar[str] = "tool"
    requires: ClassVar[tuple[str, ...]] = ()  # libraries it imports: checked when the config is (train/build.py)

    def __init__(self, problem: Problem) -> None:
        self.problem = problem

    def reset(self) -> str | Messages | None:
        return None

    def step(self, action: str) -> StepResult:
        """Every environment defines its own step: the base has no dynamics to fall back on."""
        raise NotImplementedError(f"environment {type(self).__name__} must define step(action) -> StepResult")


def make_env(problem: Problem) -> Environment:
    """The problem's environment, created with its `meta["env_args"]`."""
    args = problem.meta.get("env_args") or {}
    return ENVS.get(problem.env)(problem, **args)


def env_stops(problems: list[Problem]) -> tuple[str, ...]:
    """Stop strings of every environment named by `problems`, in first-seen order (an unknown
    name has none: its episode fails to start and is counted, `episodes._start`)."""
    out: list[str] = []
    for name in dict.fromkeys(p.env for p in problems if p.env and p.env in ENVS):
        for s in getattr(ENVS.get(name), "stop", ()):
            if s not in out:
                out.append(s)
    return tuple(out)
