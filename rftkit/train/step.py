"""One step of the loop (DESIGN.md): sample prompts, roll out, verify, advantages, update.

    prompts  <- sampler.next(batch)
    samples  <- rollout(policy, prompts, n)          # only if an objective needs "rollout"
    rewards  <- verify(samples); adv <- advantage(rewards, groups, mask)   (rollout_phase.py)
    demos    <- demonstrations(prompts)              # only if an objective needs "demos"
    loss     <- sum_i weight_i(progress) * objective_i(inputs); update    (update.py)
    sampler.update(per-prompt stats)

`StepParts` holds the plain objects built once per stage; `run_step` is the whole step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rftkit.algos.shaping import adaptive_kl_coef
from rftkit.data.demos import DemoProvider
from rftkit.data.samplers import Sampler
from rftkit.rollout.base import Generator, SamplingParams
from rftkit.train.batches import demo_batch
from rftkit.train.controllers import WeightController
from rftkit.train.rollout_phase import RLOptions, rollout
from rftkit.train.update import UpdateState, update_policy
from rftkit.types import Problem


@dataclass
class Term:
    """One objective of the stage: its function (knobs bound) and its weight schedule."""

    name: str
    fn: Callable
    weight: Callable[[float], float]


@dataclass
class StepParts:
    model: torch.nn.Module
    ref_model: torch.nn.Module | None
    critic: torch.nn.Module | None
    teacher: torch.nn.Module | None
    tok: object
    generator: Generator
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    pool: list[Problem]
    terms: list[Term]
    needs: frozenset[str]
    advantage_fn: Callable
    demo_provider: DemoProvider
    controller: WeightController | None
    rewards: object | None  # rftkit.rewards.RewardRunner, or None: each problem's verifier inline
    sampling: SamplingParams
    rl: RLOptions
    batch_size: int
    update_epochs: int
    minibatches: int
    grad_accum: int
    grad_clip: float
    lr_at: Callable[[int], float]


def _set_lr(parts: StepParts, step: int) -> float:
    lr = parts.lr_at(step)
    for g in parts.optimizer.param_groups:  # a critic group carries its own scale
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr


def run_step(parts: StepParts, state: UpdateState, step: int, progress: float, seed: int) -> dict:
    """One full step; returns its flat metrics. `step` is the global step (for LR and seeds)."""
    indices = parts.sampler.next(parts.batch_size)
    problems = [parts.pool[i] for i in indices]
    metrics: dict[str, float] = {}
    batch = demos = None
    stats = []
    if "rollout" in parts.needs:
        batch, m, stats = rollout(parts, indices, seed, state.kl_coef, progress)
        metrics.update(m)
    if "demos" in parts.needs:
        rng = random.Random(f"{seed}/demos")
        max_len = getattr(getattr(parts.model, "cfg", None), "max_seq_len", 10**9)
        pairs, m = parts.demo_provider(problems, batch, rng)
        demos = demo_batch(parts.tok, pairs, max_len)
        metrics.update(m)
        metrics["data/demos"] = float(len(pairs))
    weights = {t.name: t.weight(progress) for t in parts.terms}
    if parts.controller is not None:
        weights, m = parts.controller.weights(weights, random.Random(f"{seed}/controller"))
        metrics.update(m)
    metrics.update({f"weight/{k}": v for k, v in weights.items()})
    metrics["optim/lr"] = _set_lr(parts, step)
    t0 = time.perf_counter()
    if batch is not None or demos is not None:
        metrics.update(update_policy(parts, state, batch, demos, weights, seed))
    metrics["time/update"] = time.perf_counter() - t0
    if parts.rl.kl_target is not None and "policy/kl_reward" in metrics:
        state.kl_coef = adaptive_kl_coef(state.kl_coef, metrics["policy/kl_reward"], parts.rl.kl_target,
                                         parts.rl.kl_horizon, parts.batch_size * parts.sampling.n)
    metrics.update(parts.sampler.update(stats))
    if parts.controller is not None:
        parts.controller.observe(metrics)
    return metrics
