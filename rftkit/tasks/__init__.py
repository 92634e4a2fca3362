"""Synthetic verifiable tasks. Importing this package registers the built-in ones.

Built-in tasks (see each module): "arithmetic", "countdown", "strings", "sorting". Their
verifiers live in `VERIFIERS` ("exact", "countdown", "sorting"); a user task registers
itself the same way from its own file (examples/my_task.py).
"""

from rftkit.tasks import agent_dialogue, agent_tasks, arithmetic, countdown, dataset_task, sorting, strings  # noqa: F401  (registers)
from rftkit.tasks.base import TASKS, VERIFIERS, Task, parse_answer, verify

__all__ = ["TASKS", "VERIFIERS", "Task", "parse_answer", "verify"]
