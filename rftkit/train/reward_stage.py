"""The end of a reward-model stage: save the trained scorer, measure its held-out pair accuracy.

A stage whose objectives need "scores" (`bradley_terry` on pairs, `rm_pointwise` on labelled
rollouts) trains `parts.scorer` (model/reward_model.py). When it ends, the loop calls
`finish_reward_model`, which

  1. saves the scorer to <run>/reward_models/<stage>/ (a reward-model folder: `rftkit export`
     turns it into an AutoModelForSequenceClassification, a reward component `model:` names it);
  2. builds pairs for the held-out test problems with the stage's pair source (a source that
     reads rollouts gets the current policy's rollouts of those prompts, a group per prompt;
     a stage without a pair objective, `rm_pointwise`, is measured on `group` pairs by the
     verifier), scores both sides and logs the share with score(chosen) > score(rejected):
     eval/rm/pair_accuracy (nan when no pair could be built) and eval/rm/pairs, also written
     to <run>/eval/<stage>_rm.json.
"""

from __future__ import annotations

import dataclasses
import json
import random

import torch

from rftkit.data.pairs import GroupPairs
from rftkit.model.reward_model import save_reward_model
from rftkit.report.progress import console
from rftkit.train.batches import pair_batch
from rftkit.train.loop import _log, step_seed  # the loop's own record format and seeds
from rftkit.train.step import rollout
from rftkit.train.update import UpdateState

SCORE_BATCH = 64
"""Pairs scored per no-grad forward."""


def finish_reward_model(run, parts, stage) -> None:
    """Save parts.scorer to run.dir / "reward_models" / stage.name and evaluate it."""
    folder = save_reward_model(parts.scorer, run.tok, run.dir / "reward_models" / stage.name)
    problems = run.pools.split("test")
    seed = step_seed(run.cfg.seed + 29, run.state.global_step)
    source, how = _source(parts, stage)
    acc, n = held_out_pair_accuracy(parts, source, problems, seed)
    metrics = {"eval/rm/pair_accuracy": acc, "eval/rm/pairs": float(n)}
    _log(run, stage.name, metrics)
    out = run.dir / "eval"
    out.mkdir(exist_ok=True)
    (out / f"{stage.name}_rm.json").write_text(json.dumps(
        {"stage": stage.name, "step": run.state.global_step, "folder": str(folder), "pairs_from": how,
         "problems": len(problems), "pair_accuracy": None if n == 0 else acc, "pairs": n}, indent=1))
    if run.cfg.progress:
        shown = f"{acc:.3f} on {n} pairs" if n else "n/a (no held-out pair could be built)"
        console.print(f"stage {stage.name}: reward model saved to {folder}; held-out pair accuracy {shown} "
                      f"({how}, {len(problems)} test problems)")


def _source(parts, stage):
    """The pair source the accuracy is measured with, and its description."""
    if "pairs" in parts.needs:
        return parts.pair_source, f"the stage's {stage.pairs.name} pairs {json.dumps(stage.pairs.params)}"
    return GroupPairs(parts.pool, by="correct"), "group pairs by the verifier (a pointwise RM)"


def held_out_pair_accuracy(parts, source, problems: list, seed: int) -> tuple[float, int]:
    """(share of pairs with score(chosen) > score(rejected), number of pairs) for `problems`;
    (nan, 0) when the source gives no pair (e.g. every group all right or all wrong)."""
    if not problems:
        return float("nan"), 0
    batch = None
    if "rollout" in parts.needs or isinstance(source, GroupPairs):
        held = dataclasses.replace(parts, pool=problems, batch_size=len(problems))
        batch, _, _ = rollout(held, list(range(len(problems))), seed, UpdateState())
    pairs, _ = source(problems, batch, random.Random(f"{seed}/rm_pairs"))
    max_len = getattr(getattr(parts.model, "cfg", None), "max_seq_len", 10**9)
    pb = pair_batch(parts.tok, pairs, batch, max_len)
    if pb is None:
        return float("nan"), 0
    device = next(parts.scorer.parameters()).device
    wins = 0
    was_training = parts.scorer.training
    parts.scorer.eval()
    with torch.no_grad():
        for lo in range(0, len(pairs), SCORE_BATCH):
            tokens, mask = pb.tokens[lo: lo + SCORE_BATCH], pb.mask[lo: lo + SCORE_BATCH]
            p, t = tokens.shape[0], tokens.shape[-1]
            s = parts.scorer.score(tokens.reshape(2 * p, t).to(device), mask.reshape(2 * p, t).to(device))
            s = s.reshape(p, 2)
            wins += int((s[:, 0] > s[:, 1]).sum())
    parts.scorer.train(was_training)
    return wins / len(pairs), len(pairs)


__all__ = ["finish_reward_model", "held_out_pair_accuracy"]
