"""The learner group: `dist.learners` Ray actors that run the update with torch.distributed.

    group = LearnerGroup(parts, cfg)            # at a stage's start (after a resume's load)
    metrics = group.update(state, batch, demos, weights, seed, pairs, lr)   # instead of update_policy
    group.pull_optimizer(parts.optimizer)       # before a checkpoint
    group.close()

Each learner holds a copy of what the update reads (`LearnerParts`: policy, reference,
critic, reward head, optimizer, objectives) and runs the unchanged `update_policy` on its
share of every optimizer step (dist/collective.py says which share and how the gradients are
summed). The driver keeps the weights its engines, evaluation and checkpoints read: after
each update it loads rank 0's trainable tensors into them and bumps their version, so
engines holding a copy (vLLM, Ray rollout workers) reload. Optimizer moments live in the
learners; a checkpoint pulls rank 0's into the driver's optimizer, and a resumed stage
starts its learners from the driver's, so resume stays exact.

A learner that dies (its process killed, a collective that times out) stops the run with
`LearnerDied`; the last checkpoint is intact and `--resume` continues from it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn

from rftkit.errors import TrainingAborted
from rftkit.rollout.weights import bump


@dataclass
class LearnerParts:
    """What `update_policy` reads from the step's parts (train/step.py StepParts), and no
    more: no engine, sampler or pool travels to a learner."""

    model: nn.Module
    ref_model: nn.Module | None
    critic: nn.Module | None
    scorer: nn.Module | None
    optimizer: torch.optim.Optimizer
    terms: list
    needs: frozenset[str]
    sampling: object
    update_epochs: int
    minibatches: int
    grad_accum: int
    grad_clip: float
    skip_inert_rows: bool
    controller: object | None = None  # only tested for None-ness by the update (the driver runs it)
    shard: object | None = None

    @classmethod
    def of(cls, parts) -> LearnerParts:
        return cls(model=parts.model, ref_model=parts.ref_model, critic=parts.critic, scorer=parts.scorer,
                   optimizer=parts.optimizer, terms=parts.terms, needs=parts.needs, sampling=parts.sampling,
                   update_epochs=parts.update_epochs, minibatches=parts.minibatches, grad_accum=parts.grad_accum,
                   grad_clip=parts.grad_clip, skip_inert_rows=parts.skip_inert_rows,
                   controller=True if parts.controller is not None else None)


class LearnerDied(TrainingAborted):
    """A learner process died or a collective timed out; the run stops at its last checkpoint."""


def trainable_state(parts) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors an update changes, by module: trainable parameters (full tensors)."""
    out = {}
    for name in ("model", "critic", "scorer"):
        module = getattr(parts, name)
        if module is not None:
            out[name] = {k: _full(p).detach().cpu().clone() for k, p in module.named_parameters() if p.requires_grad}
    return out


def load_trainable(parts, state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Write `trainable_state` tensors into the driver's modules in place."""
    with torch.no_grad():
        for name, tensors in state.items():
            params = dict(getattr(parts, name).named_parameters())
            for k, t in tensors.items():
                params[k].copy_(t)
    bump(parts.model)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective under FSDP2: every rank calls it in the same order)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Learner:
    """One rank of the group (a Ray actor; plain class so tests can also run it in-process)."""

    def __init__(self, rank: int, world: int, strategy: str, threads: int, update_fn) -> None:
        """update_fn: train/update.py `update_policy` (passed in: dist stands below train)."""
        if threads:
            torch.set_num_threads(threads)
        self.rank, self.world, self.strategy, self.update_fn = rank, world, strategy, update_fn
        self.parts: LearnerParts | None = None

    def pid(self) -> int:
        return os.getpid()

    def address(self) -> str:
        import ray

        return f"tcp://{ray.util.get_node_ip_address()}:{free_port()}"

    def join(self, init_method: str, backend: str, timeout_s: float) -> None:
        import torch.distributed as dist

        dist.init_process_group(backend, init_method=init_method, rank=self.rank, world_size=self.world,
                                timeout=timedelta(seconds=timeout_s))

    def load(self, parts: LearnerParts) -> None:
        from rftkit.dist.collective import Shard

        if self.strategy == "fsdp2":
            from rftkit.dist.fsdp import shard_parts

            shard_parts(parts)
        parts.shard = Shard(self.rank, self.world, self.strategy)
        self.parts = parts

    def update(self, state, batch, demos, weights, seed, pairs, lr):
        for g in self.parts.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        metrics = self.update_fn(self.parts, state, batch, demos, weights, seed, pairs)
        tensors = trainable_state(self.parts)  # every rank: under FSDP2 the gather is a collective
        return metrics, state, tensors if self.rank == 0 else None

    def optimizer_state(self) -> dict | None:
        from rftkit.dist.fsdp import full_optimizer_state

        sd = full_optimizer_state(self.parts.optimizer)
        return sd if self.rank == 0 else None

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
