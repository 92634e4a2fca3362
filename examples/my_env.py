"""A user-defined environment in its own file: "echo", a two-step dialogue.

The prompt "echo123:=" hides a random word (the number tells problems apart: pools keep
prompts distinct); the model asks ("?"), the environment tells the word, the model repeats
it:  echo123:=?\\nword is kqz\\n#kqz\\n . The file registers an
environment and a task naming it, as the built-in ones do (rftkit/envs/games.py).

Use it from a recipe by importing the file and naming the task:

    imports: [examples/my_env.py]   # files loaded (registering their parts) before use
    tasks: [echo]                   # knobs (here `length`) go in the task entry's params
    rollout: {episode: {max_turns: 2}}

Protocol (rftkit/envs/base.py): an environment is created per episode from its problem;
`reset()` gives the first observation (None: the prompt); `step(turn)` gets each model turn
(ending at one of `stop`) and returns StepResult(observation, reward, done, info). The
outcome is the problem's verifier on the last turn; numeric info is summed and logged.
"""

from __future__ import annotations

import random
from typing import ClassVar

from rftkit.envs.base import ENVS, EnvBase, StepResult
from rftkit.tasks.base import TASKS
from rftkit.types import Problem


@ENVS.register("echo")
class EchoEnv(EnvBase):
    stop = ("\n",)  # one model turn = one line

    def step(self, turn: str) -> StepResult:
        if "#" in turn:  # the answer: done, the verifier ("exact") scores it
            return StepResult(done=True)
        if "?" in turn:
            return StepResult(f"word is {self.problem.answer}\n", info={"asked": 1})
        return StepResult("ask ?\n", info={"invalid": 1})


@TASKS.register("echo")
class Echo:
    """Repeat a word only the environment knows. Knob: length of the word."""

    name: ClassVar[str] = "echo"
    difficulty_doc: ClassVar[str] = "unused (the word length is the knob)"
    default_difficulty: ClassVar[tuple[int, int]] = (1, 1)
    default_ood: ClassVar[tuple[int, int]] = (2, 2)

    def __init__(self, *, length: int = 3) -> None:
        self.length = length

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(self.length))
        # model turns are trained, the observation is not; the texts concatenate to `demo`
        segments = [["?\n", True], [f"word is {word}\n", False], [f"#{word}\n", True]]
        return Problem(task=self.name, prompt=f"echo{rng.randrange(100_000)}:=", answer=word, verifier="exact",
                       difficulty=difficulty, demo="".join(t for t, _ in segments), source=self.name, env="echo",
                       meta={"demo_segments": segments})
