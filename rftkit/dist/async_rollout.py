"""Asynchronous rollouts (`dist.async.max_staleness=K`): steps t+1..t+K generate while step t trains.

    pre = Prefetcher(parts, k, make_generator, stage_steps, checkpoint_every, seed_of, rollout)
    batch, metrics, stats, indices = pre.take(s, state)   # step s's rollout (waits for it)
    pre.fill(s, state)                                    # submit s+1..s+K before s's update
    ... update ...
    pre.close()

Generation runs on one background thread over a copy of the policy (`RolloutCopy`), so the
update never writes weights an engine is reading: each submitted rollout carries a snapshot
of the weights as they were when it was submitted (after step s-1's update) and loads it
into the copy just before it generates. A batch generated from weights d updates old trains
at step s with `rollout/staleness` = d <= K. The engine's log-probs of the sampled tokens
(`batch.old_logp`, the behaviour policy) reach the objective as `behav_logp`: the policy
objective's truncated IS weight min(exp(logp_current - logp_behaviour), tis_cap) corrects
for the lag (decoupled PPO, as AReaL; config.py sets tis_cap 2 when a recipe leaves it unset).

Exactness: nothing is submitted across a checkpoint (the step after a checkpoint generates
synchronously from the checkpointed weights), so a resumed async run equals the
uninterrupted one. Curricula see a step's statistics up to K steps after they drew the
prompts of later steps (the sampler is shared under a lock).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import torch

from rftkit.dist.learners import load_trainable, trainable_state


class LockedSampler:
    """The stage's sampler, shared by the step (update) and the rollout thread (refills)."""

    def __init__(self, sampler) -> None:
        self.inner, self.lock = sampler, threading.Lock()

    def next(self, n: int) -> list[int]:
        with self.lock:
            return self.inner.next(n)

    def update(self, stats) -> dict:
        with self.lock:
            return self.inner.update(stats)

    def state_dict(self) -> dict:
        with self.lock:
            return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        with self.lock:
            self.inner.load_state_dict(state)

    def __getattr__(self, name: str):  # anything else (read-only knobs) from the sampler itself
        return getattr(self.inner, name)


class RolloutCopy:
    """A copy of the policy that only the rollout thread reads, and the engine over it."""

    def __init__(self, parts, make_generator: Callable) -> None:
        self.model = copy.deepcopy(parts.model)
        self.generator = make_generator(self.model)

    def load(self, snapshot: dict) -> None:
        load_trainable(self, {"model": snapshot})

    critic = scorer = None  # load_trainable reads these names


class Prefetcher:
    def __init__(self, parts, k: int, make_generator: Callable, steps: int, checkpoint_every: int,
                 seed_of: Callable[[int], int], rollout_fn: Callable) -> None:
        """rollout_fn: train/step.py `rollout` (passed in: dist stands below train)."""
        self._rollout = rollout_fn
        self.k, self.steps, self.every, self.seed_of = k, steps, checkpoint_every, seed_of
        parts.sampler = LockedSampler(parts.sampler)
        self.copy = RolloutCopy(parts, make_generator)
        self.view = replace(parts, model=self.copy.model, generator=self.copy.generator)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rftkit-rollout")
        self.pending: dict[int, tuple[Future, int, list[int]]] = {}
        self.parts = parts

    def _run(self, snapshot: dict, indices: list[int], s: int, state) -> tuple:
        self.copy.load(snapshot)
        return self._rollout(self.view, indices, self.seed_of(s), state, s / max(1, self.steps))

    def take(self, s: int, state) -> tuple:
        """(batch, metrics, stats, indices) of stage step s: prefetched, or generated now from the current weights."""
        if s in self.pending:
            fut, made_at, indices = self.pending.pop(s)
            batch, metrics, stats = fut.result()
        else:
            indices, made_at = self.parts.sampler.next(self.parts.batch_size), s
            batch, metrics, stats = self._run(_snapshot(self.parts), indices, s, state)
        metrics["rollout/staleness"] = float(s - made_at)
        return batch, metrics, stats, indices

    def fill(self, s: int, state) -> None:
        """Submit the rollouts of steps s+1..s+K that precede the next checkpoint (weights of now)."""
        last = min(s + self.k, self.steps - 1, _next_checkpoint(s, self.every))
        todo = [t for t in range(s + 1, last + 1) if t not in self.pending]
        if not todo:
            return
        snap = _snapshot(self.parts)
        for t in todo:
            indices = self.parts.sampler.next(self.parts.batch_size)
            self.pending[t] = (self.pool.submit(self._run, snap, indices, t, state), s, indices)

    def close(self) -> None:
        for fut, _, _ in self.pending.values():
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        close = getattr(self.copy.generator, "close", None)
        if close is not None:
            close()


def _snapshot(parts) -> dict[str, torch.Tensor]:
    return trainable_state(parts)["model"]


def _next_checkpoint(s: int, every: int) -> int:
    """The last stage step whose rollout may be made before the checkpoint after step s or later:
    the checkpoint follows step j when (j + 1) % every == 0."""
    j = s
    while (j + 1) % every:
        j += 1
    return j
