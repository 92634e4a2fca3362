"""Resamplers: after a round of groups is generated and verified, keep, redo or ask for more.

    ResampleFn(groups: list[Group], ctx: ResampleCtx, *, knobs) -> Decision

A decision may drop groups (`keep`), ask the step to regenerate some groups from new row
specs (`redo`: group position -> specs; the step generates, verifies and calls the resampler
again with `ctx.attempt + 1` until it redoes nothing), and ask for another round of fresh
prompts (`more`). Resamplers read rows, verdicts and rewards; they never call the engine or a
verifier. A stage lists them in order (`rollout.resample`); the step applies each to every
round's groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rftkit.algos.layouts import Group, RowSpec, demo_prefix
from rftkit.registry import Registry
from rftkit.types import Problem


@dataclass(frozen=True)
class ResampleCtx:
    """round: 0 for the step's first prompts, then one per refill; attempt: how many times this
    resampler has redone groups of this round; kept: groups kept by earlier rounds; target: the
    groups the step wants (the stage's batch size); problem_of: pool index -> Problem."""

    round: int
    attempt: int
    kept: int
    target: int
    problem_of: Callable[[int], Problem]


@dataclass(frozen=True)
class Decision:
    keep: tuple[bool, ...] | None = None
    redo: dict[int, tuple[RowSpec, ...]] = field(default_factory=dict)
    more: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


ResampleFn = Callable[..., Decision]
RESAMPLERS: Registry[ResampleFn] = Registry("resampler")


def has_variance(group: Group) -> bool:
    """DAPO's dynamic-sampling constraint 0 < #correct < G (arXiv:2503.14476, eq. 11): on
    accuracy, not on the shaped reward, so a group of wrong answers whose rewards differ only
    by the overlong penalty (or a format bonus) is still dropped, as in DAPO's verl recipe
    (`filter_groups.metric: acc`)."""
    correct = group.correct()
    return any(correct) and not all(correct)


@RESAMPLERS.register("dynamic_sampling")
def dynamic_sampling(groups: list[Group], ctx: ResampleCtx, *, mode: Literal["drop", "refill"] = "refill",
                     max_rounds: int = 4) -> Decision:
    """DAPO dynamic sampling (Yu et al. 2025, arXiv:2503.14476): drop groups whose answers are
    all right or all wrong (their group-relative advantage is 0); with `mode: refill`, draw
    fresh prompts for up to `max_rounds` more rounds until the batch is full again."""
    keep = tuple(has_variance(g) for g in groups)
    more = mode == "refill" and ctx.kept + sum(keep) < ctx.target and ctx.round < max_rounds
    metrics = {"adv/zero_std_frac_sampled": 1 - sum(keep) / max(1, len(groups))} if ctx.round == 0 else {}
    return Decision(keep=keep, more=more, metrics=metrics)


@RESAMPLERS.register("ghpo_hints")
def ghpo_hints(groups: list[Group], ctx: ResampleCtx, *, levels: tuple[float, ...] = (0.25, 0.5, 0.75)) -> Decision:
    """GHPO (arXiv:2507.10628): a group whose samples all failed is sampled
    again with the first `levels[attempt]` of its demonstration as a hint in the prompt, each
    level in turn while any group still fails. Groups without a demonstration are left alone."""
    if ctx.attempt >= len(levels):
        return Decision()
    failing = [i for i, g in enumerate(groups) if ctx.problem_of(g.index).demo is not None and not any(g.correct())]
    redo = {}
    for i in failing:
        hint = demo_prefix(ctx.problem_of(groups[i].index).demo, levels[ctx.attempt])
        redo[i] = (RowSpec(prefix=hint, hint=True),) * len(groups[i].rows)
    metrics = {"mix/hinted_fraction": len(failing) / max(1, len(groups))} if ctx.attempt == 0 else {}
    return Decision(redo=redo, metrics=metrics)


__all__ = ["RESAMPLERS", "Decision", "ResampleCtx", "dynamic_sampling", "ghpo_hints", "has_variance"]
