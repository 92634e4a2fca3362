"""Group layouts: which rows a prompt's group holds. Pure functions, registered by name.

    LayoutFn(problem, group_size, progress, *, knobs) -> tuple[RowSpec, ...] (group_size rows)

A `RowSpec` says how the step makes one row: sample it from the prompt (the usual case),
sample it after a forced prefix of the problem's demonstration (Prefix-RFT: the prefix is part
of the completion but not of the policy mask), after a hint (GHPO: the hint is part of the
prompt), or take the demonstration itself as the row (LUFFY, RL-PLUS). Layouts never call the
engine or a verifier; the step (`rftkit.train.step`) generates and verifies what they ask for.
Demonstration rows come last in a group. `Row` and `Group` are the rows once generated and
verified, what resamplers (`rftkit.algos.resample`) read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from rftkit.algos.schedules import SCHEDULES
from rftkit.registry import PartSpec, Registry, bind_spec
from rftkit.types import Episode, Problem, Verdict


@dataclass(frozen=True)
class RowSpec:
    """One row to make. prefix: text forced after the prompt; hint: the prefix is a hint (part
    of the prompt) rather than a trained-off-policy demonstration prefix; demo: the row is the
    problem's demonstration, not a sample."""

    prefix: str = ""
    hint: bool = False
    demo: bool = False


@dataclass
class Row:
    """One completion, token lists not yet padded (layout of rftkit.types.RolloutBatch)."""

    problem: Problem
    tokens: list[int]
    logp: list[float]
    mask: list[float]
    prefix: list[float]
    text: str
    truncated: bool
    offpolicy: bool = False
    verdict: Verdict | None = None
    reward: float = 0.0
    episode: Episode | None = None  # a multi-turn row: its turns, observations and env rewards


@dataclass
class Group:
    """The rows of one prompt; `index` is the prompt's index in the training pool."""

    index: int
    rows: list[Row] = field(default_factory=list)

    def rewards(self) -> list[float]:
        return [r.reward for r in self.rows]

    def correct(self) -> list[bool]:
        return [r.verdict is not None and r.verdict.correct for r in self.rows]


LayoutFn = Callable[..., tuple[RowSpec, ...]]
GROUP_LAYOUTS: Registry[LayoutFn] = Registry("group layout")
Schedule = Annotated[float | dict, PartSpec(SCHEDULES)]
"""A constant, or `{name, params}` of a schedule over the stage's progress in [0, 1]."""


def demo_prefix(demo: str, ratio: float) -> str:
    """The first round(ratio * len) characters of a demonstration, leaving at least one."""
    n = min(max(0, round(ratio * len(demo))), len(demo) - 1)
    return demo[:n]


def scheduled(value: float | dict, progress: float) -> float:
    """A `Schedule` knob's value at `progress`."""
    if isinstance(value, dict):
        return float(bind_spec(SCHEDULES, value, "schedule")(progress))
    return float(value)


@GROUP_LAYOUTS.register("on_policy")
def on_policy(problem: Problem, group_size: int, progress: float) -> tuple[RowSpec, ...]:
    """G samples of the prompt (GRPO and every on-policy estimator)."""
    return (RowSpec(),) * group_size


@GROUP_LAYOUTS.register("prefix_rft")
def prefix_rft(problem: Problem, group_size: int, progress: float, *, rows: int = 2,
               ratio: Schedule = 0.5) -> tuple[RowSpec, ...]:
    """`rows` of the G samples continue from the first `ratio` of the demonstration.

    Prefix-RFT (Huang et al. 2025, arXiv:2507.01679): the prefix tokens are trained as
    off-policy tokens (`prefix_mask`, the `prefix_sft` objective), the continuation on-policy;
    `ratio` may be a schedule over the stage (the paper decays it). Problems without a
    demonstration get G plain samples.
    """
    if problem.demo is None:
        return (RowSpec(),) * group_size
    k = min(rows, group_size)
    pre = demo_prefix(problem.demo, scheduled(ratio, progress))
    return (RowSpec(prefix=pre),) * k + (RowSpec(),) * (group_size - k)


@GROUP_LAYOUTS.register("demo_rows")
def demo_rows(problem: Problem, group_size: int, progress: float, *, rows: int = 1) -> tuple[RowSpec, ...]:
    """G - `rows` samples plus `rows` copies of the demonstration (at least one sample).

    LUFFY (Yan et al. 2025, arXiv:2504.14945) and RL-PLUS (arXiv:2508.00222) put off-policy
    demonstrations in the group, so its advantage baseline includes them; their behaviour
    log-probs are unknown (0) and the `luffy` / `rl_plus` losses weight them.
    """
    if problem.demo is None:
        return (RowSpec(),) * group_size
    k = min(rows, group_size - 1)
    return (RowSpec(),) * (group_size - k) + (RowSpec(demo=True),) * k


__all__ = ["GROUP_LAYOUTS", "Group", "Row", "RowSpec", "demo_prefix", "scheduled"]
