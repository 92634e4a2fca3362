"""One step of the loop (DESIGN.md): sample prompts, roll out, verify, advantages, update.

    prompts  <- sampler.next(batch)
    samples  <- rollout(policy, prompts, n)          # only if an objective needs "rollout"
    rewards  <- verify(samples); adv <- advantage(rewards, groups, mask)
    demos    <- demonstrations(prompts)              # only if an objective needs "demos"
    loss     <- sum_i weight_i(progress) * objective_i(inputs); update; sampler.update(stats)

`StepParts` holds the plain objects built once per stage; `run_step` is the whole step.
"""

from __future__ import annotations


import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rftkit.algos.objectives import LossInputs
from rftkit.data.samplers import PromptStats, Sampler
from rftkit.rollout.base import Generator, SamplingParams
from rftkit.tasks.base import verify
from rftkit.train.batches import demo_batch, token_logprobs
from rftkit.train.update import UpdateState, update_policy
from rftkit.types import DemoBatch, Problem, RolloutBatch


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
    tok: object
    generator: Generator
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    pool: list[Problem]
    terms: list[Term]
    needs: frozenset[str]
    advantage_fn: Callable
    demo_fn: Callable
    sampling: SamplingParams
    batch_size: int
    update_epochs: int
    minibatches: int
    grad_accum: int
    grad_clip: float
    lr_at: Callable[[int], float]


def rollout(parts: StepParts, problems: list[Problem], seed: int) -> tuple[RolloutBatch, dict]:
    """Sample group_size completions per prompt, verify them, compute advantages."""
    t0 = time.perf_counter()
    prompts = [[parts.tok.bos_id] + parts.tok.encode(p.prompt) for p in problems]
    sampling = SamplingParams(**{**parts.sampling.__dict__, "seed": seed})
    gen = parts.generator.generate(prompts, sampling)
    t1 = time.perf_counter()
    g = sampling.n
    expanded = [p for p in problems for _ in range(g)]
    verdicts = [verify(p, text) for p, text in zip(expanded, gen.texts)]
    rewards = torch.tensor([v.score for v in verdicts], dtype=torch.float32)
    group_ids = torch.arange(len(problems)).repeat_interleave(g)
    advantages = parts.advantage_fn(rewards, group_ids, gen.mask)
    t2 = time.perf_counter()
    batch = RolloutBatch(tokens=gen.tokens, mask=gen.mask, old_logp=gen.logp, group_ids=group_ids,
                         rewards=rewards, advantages=advantages, truncated=gen.truncated,
                         problems=expanded, texts=gen.texts, verdicts=verdicts)
    grouped = rewards.view(len(problems), g)
    lengths = gen.mask.sum(1)
    metrics = {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "reward/acc": sum(v.correct for v in verdicts) / len(verdicts),
        "rollout/len_mean": float(lengths.mean()), "rollout/truncated_frac": float(gen.truncated.float().mean()),
        "adv/zero_std_frac": float((grouped.std(1) == 0).float().mean()) if g > 1 else 1.0,
        "adv/abs_mean": float(advantages.abs().sum() / gen.mask.sum().clamp(min=1)),
        "time/rollout": t1 - t0, "time/reward": t2 - t1, "perf/gen_tokens": float(lengths.sum()),
    }
    return batch, metrics


def prompt_stats(indices: list[int], batch: RolloutBatch | None) -> list[PromptStats]:
    if batch is None:
        return []
    g = len(batch.rewards) // len(indices)
    r = batch.rewards.view(len(indices), g)
    std = r.std(1) if g > 1 else torch.zeros(len(indices))
    return [PromptStats(i, float(m), float(s)) for i, m, s in zip(indices, r.mean(1), std)]


def run_step(parts: StepParts, state: UpdateState, step: int, progress: float, seed: int) -> dict:
    """One full step; returns its flat metrics. `step` is the global step (for LR and seeds)."""
    indices = parts.sampler.next(parts.batch_size)
    problems = [parts.pool[i] for i in indices]
    metrics: dict[str, float] = {}
    batch = demos = None
    if "rollout" in parts.needs:
        batch, m = rollout(parts, problems, seed)
        metrics.update(m)
    if "demos" in parts.needs:
        rng = random.Random(f"{seed}/demos")
        max_len = getattr(getattr(parts.model, "cfg", None), "max_seq_len", 10**9)
        demos = demo_batch(parts.tok, problems, parts.demo_fn(problems, rng), max_len)
        metrics["data/demos"] = float(0 if demos is None else len(demos.problems))
    weights = {t.name: t.weight(progress) for t in parts.terms}
    metrics.update({f"weight/{k}": v for k, v in weights.items()})
    for g in parts.optimizer.param_groups:
        g["lr"] = parts.lr_at(step)
    metrics["optim/lr"] = parts.lr_at(step)
    t0 = time.perf_counter()
    metrics.update(update_policy(parts, state, batch, demos, weights))
    metrics["time/update"] = time.perf_counter() - t0
    metrics.update(parts.sampler.update(prompt_stats(indices, batch)))
    return metrics


__all__ = ["StepParts", "Term", "run_step", "rollout", "LossInputs", "DemoBatch"]
