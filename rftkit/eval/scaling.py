"""Test-time scaling: what evaluation does with more compute than one sample per problem.

A `ScalingSpec` (built from the config's `eval.scaling` by the training layer) tells
`rftkit.eval.evaluate.evaluate` which selectors and searches to run besides pass@k:

    selectors over the n sampled completions (no extra generation):
      best-of-n by the verifier (oracle), by the policy's own mean token log-prob, by an outcome
      reward model, by a process reward model (min over steps); majority and reward-weighted
      voting; each also as an accuracy-vs-samples curve over k = 1, 2, 4, ..., n
    searches (extra generation): token-level beam search by log-prob (width 1 = greedy), and
      step-level beam search guided by a PRM or by the verifier as an oracle

Scorers are plain callables, so eval/ loads no model folders itself:

    Scorer      (problem, completions) -> one score per completion (an outcome RM)
    StepScorer  (problem, completions) -> per completion, one score per step (a PRM)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rftkit.types import Problem

Scorer = Callable[[Problem, list[str]], list[float]]
StepScorer = Callable[[Problem, list[str]], list[list[float]]]


@dataclass(frozen=True)
class StepSearch:
    """Step-level beam search: keep `width` partial solutions; from each, sample `expand`
    continuations up to the next `separator` (or the end); score every candidate by `guide`
    ("prm": the PRM's score of its last step; "verifier": the fraction of `rollouts` sampled
    completions from it that the verifier accepts, Math-Shepherd-style, an oracle);
    stop after `max_steps` steps or when every beam has ended."""

    width: int = 4
    expand: int = 4
    separator: str = ";"
    guide: str = "prm"
    rollouts: int = 4
    max_steps: int = 16


@dataclass(frozen=True)
class ScalingSpec:
    reward_model: Scorer | None = None
    prm: StepScorer | None = None
    curve: bool = True
    beam_width: int = 0
    step_search: StepSearch | None = None


__all__ = ["ScalingSpec", "Scorer", "StepScorer", "StepSearch"]
