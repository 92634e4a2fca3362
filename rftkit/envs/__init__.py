"""Environments for multi-turn rollouts (tool calls, games, simulated users) and the episode
loop that runs them. Importing this package registers the built-in environments; a user
environment registers itself the same way from its own file (examples/my_env.py).
"""

from rftkit.envs import games, tool_env  # noqa: F401  (registers "guess", "user"; "calc", "python", "search")
from rftkit.envs.base import ENVS, EnvBase, Environment, StepResult, make_env

__all__ = ["ENVS", "EnvBase", "Environment", "StepResult", "make_env"]
