"""User-defined rollout parts in their own file: a resampler and a reward transform.

Each is one registered pure function; a recipe names them under the RL stage's `rollout:`

    imports: [examples/my_rollout_parts.py]
    stages:
      - name: rl
        rollout:
          resample: [{name: keep_learnable, params: {min_correct: 1}}]
          rewards: [{name: brevity_bonus, params: {bonus: 0.2, below: 20}}]

and `rftkit run` checks the names and knobs before anything trains. Neither calls the engine or
a verifier: the step (rftkit/train/step.py) generates and verifies; these only decide.
"""

from __future__ import annotations

from rftkit.algos.layouts import Group
from rftkit.algos.resample import RESAMPLERS, Decision, ResampleCtx
from rftkit.algos.shaping import REWARD_TRANSFORMS, RewardBatch, Shaped


@RESAMPLERS.register("keep_learnable")
def keep_learnable(groups: list[Group], ctx: ResampleCtx, *, min_correct: int = 1) -> Decision:
    """Drop groups with fewer than `min_correct` correct samples (a one-sided DAPO filter)."""
    keep = tuple(sum(g.correct()) >= min_correct for g in groups)
    return Decision(keep=keep, metrics={"rollout/learnable_frac": sum(keep) / max(1, len(groups))})


@REWARD_TRANSFORMS.register("brevity_bonus")
def brevity_bonus(rewards, batch: RewardBatch, *, bonus: float = 0.1, below: int = 16) -> Shaped:
    """Add `bonus` to correct-or-not samples shorter than `below` tokens ([N] rewards)."""
    short = (batch.lengths < below).to(rewards.dtype)
    return Shaped(rewards + bonus * short, batch.mask, {"reward/brevity_frac": float(short.mean())})
