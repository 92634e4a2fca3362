"""Pair sources: which (chosen, rejected) completions the preference objectives of a step compare.

    source(problems, batch, rng) -> (list of Pair, metrics)

`problems` are the step's prompts; `batch` is the step's scored rollouts (None when the stage
has none). A source that reads rollouts registers with `needs={"rollout"}`, so a stage whose
only objective is DPO still samples (online DPO). A completion is text (tokenized like a
demonstration) or the index of a rollout row (its tokens are used as sampled, so the policy
is scored on exactly what it generated). Registered by name; knobs are keyword-only.

    dataset   the problem's own pair: `demo` is chosen, `meta["rejected"]` rejected (a
              preference dataset, or a pairs file written by `rftkit pairs`): offline DPO
    group     online DPO (Guo et al. 2024, arXiv:2402.04792; the RLHF Workflow's iterative DPO,
              Dong et al. 2024, arXiv:2405.07863): in each group of the step's rollouts the
              best row by reward is chosen and the worst rejected, when they differ by more
              than `min_margin`
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from rftkit.algos.groups import group_rows
from rftkit.data.demos import _Stateless
from rftkit.registry import Registry
from rftkit.types import Problem, RolloutBatch


@dataclass(frozen=True)
class Pair:
    """One preference pair. chosen / rejected: completion text, or a row of the step's rollout
    batch (int). The rewards are the scores that ranked them (logged, read by reward-aware
    objectives such as CoPG and A-LoL)."""

    problem: Problem
    chosen: str | int
    rejected: str | int
    chosen_reward: float = 1.0
    rejected_reward: float = 0.0


class PairSource(Protocol):
    def __call__(self, problems: list[Problem], batch: RolloutBatch | None,
                 rng: random.Random) -> tuple[list[Pair], dict[str, float]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


PAIR_SOURCES: Registry[type] = Registry("pair source")


@PAIR_SOURCES.register("dataset")
class DatasetPairs(_Stateless):
    """The problem's own pair: `demo` chosen, `meta["rejected"]` rejected; problems without
    both are left out (counted in `pairs/missing`)."""

    def __call__(self, problems, batch, rng):
        pairs = [Pair(p, p.demo, p.meta["rejected"], _reward(p, "chosen_reward", 1.0),
                      _reward(p, "rejected_reward", 0.0))
                 for p in problems if p.demo is not None and p.meta.get("rejected") is not None]
        return pairs, {"pairs/missing": float(len(problems) - len(pairs))}


def _reward(p: Problem, key: str, default: float) -> float:
    value = p.meta.get(key, default)
    return float(value) if isinstance(value, int | float) else default


@PAIR_SOURCES.register("group", needs={"rollout"})
class GroupPairs(_Stateless):
    """Best vs worst row of each group of the step's rollouts.

    by: "reward" ranks by the row's reward (verifier plus shaping, or a reward model:
    whatever the stage's reward gives), "correct" by the verifier's verdict only.
    min_margin: a group whose best and worst differ by no more than this gives no pair (a
    group of all-correct or all-wrong answers carries no preference). Ties are broken by row
    order, so the pairs are reproducible. Rows with no trained token (masked out by a reward
    transform) are never paired.
    """

    def __init__(self, pool: list[Problem], *, by: Literal["reward", "correct"] = "reward",
                 min_margin: float = 0.0) -> None:
        super().__init__(pool)
        if min_margin < 0:
            raise ValueError(f"group pairs: min_margin must be >= 0, got {min_margin}")
        self.by, self.min_margin = by, min_margin

    def __call__(self, problems: list[Problem], batch: RolloutBatch | None,
                 rng: random.Random) -> tuple[list[Pair], dict[str, float]]:
        if batch is None:
            return [], {"pairs/groups_with_pair": 0.0}
        score = (batch.rewards.tolist() if self.by == "reward"
                 else [1.0 if v.correct else 0.0 for v in batch.verdicts])
        trained = (batch.mask.sum(1) > 0).tolist()
        offpolicy = batch.offpolicy.tolist() if batch.offpolicy is not None else [False] * len(score)
        pairs, margins, n_groups = [], [], 0
        for rows in group_rows(batch.group_ids).values():
            rows = [r for r in rows if trained[r] and not offpolicy[r]]
            n_groups += 1
            if len(rows) < 2:
                continue
            best = max(rows, key=lambda r: (score[r], -r))
            worst = min(rows, key=lambda r: (score[r], r))
            if score[best] - score[worst] <= self.min_margin:
                continue
            pairs.append(Pair(batch.problems[best], best, worst, score[best], score[worst]))
            margins.append(score[best] - score[worst])
        return pairs, {"pairs/groups_with_pair": len(pairs) / max(n_groups, 1),
                       "pairs/margin_mean": sum(margins) / len(margins) if margins else 0.0}


__all__ = ["PAIR_SOURCES", "DatasetPairs", "GroupPairs", "Pair", "PairSource"]
