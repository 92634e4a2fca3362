"""Synthetic verifiable tasks. Importing this package registers the built-in ones.

Built-in tasks (see each module): "arithmetic", "countdown", "strings", "sorting", "dataset";
the multi-turn ones, whose problems name an environment (rftkit/envs): "agent_calc",
"agent_python", "agent_search" (tools), "agent_game", "agent_user" (dialogue); the visual ones,
whose problems carry images (vision_tasks.py, vision_frames.py): "vision_count",
"vision_classify", "vision_ground", "vision_spatial", "vision_jigsaw", "vision_change". Their
verifiers live in `VERIFIERS` ("exact", "countdown", "sorting", "constraints", "iou",
"jigsaw", ...); a user task registers itself the same way from its own file
(examples/my_task.py, examples/my_env.py).
"""

from rftkit.tasks import (  # noqa: F401  (registers)
    agent_dialogue,
    agent_tasks,
    arithmetic,
    countdown,
    dataset_task,
    sorting,
    strings,
    vision_frames,
    vision_tasks,
    vision_verifiers,
)
from rftkit.tasks.base import TASKS, VERIFIERS, Task, parse_answer, verify

__all__ = ["TASKS", "VERIFIERS", "Task", "parse_answer", "verify"]
