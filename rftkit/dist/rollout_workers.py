"""Rollouts on Ray actors: `dist.rollout_workers` copies of the policy, each with an engine.

    gen = RolloutService("kv", model, tok, cfg.dist, threads=cfg.model.threads)
    out = gen.generate(prompts, params)     # a Generator, like GENERATORS.bind("kv")(model, tok)
    gen.metrics()                           # {"dist/rollout_restarts": ..., "dist/rollout_workers": ...}
    gen.close()

The policy is sent once (`ray.put`); each actor builds `GENERATORS.bind(engine)(its_copy, tok)`
and runs torch with the driver's thread count, so its floats equal the driver's.

Weight sync: before a call, if `weights.version(model)` moved since the last sync (the update
bumps it after every optimizer step), the state dict is put in the object store once and every
actor loads it and bumps its own copy's version (an engine holding a further copy, vLLM,
reloads on that).

A call splits the prompts into contiguous chunks, one per actor (a prompt's n samples stay
together). Chunk 0 samples with `params.seed`, chunk c > 0 with `chunk_seed(seed, c)`: one
actor gives bit for bit what the in-process engine gives, and a chunk's rows depend only on its
prompts and seed. The chunks are concatenated in order, right-padded to a common width.

Fault tolerance: an actor that dies (kill -9, OOM) is replaced by a new one from the same
policy ref, loaded with the current weights, and its chunk is issued again with the same seed:
the call returns exactly the rows it would have returned, and `dist/rollout_restarts` counts
the replacement. A chunk whose actor dies MAX_RESTARTS times in one call is an error.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import replace

import torch

from rftkit.dist.cluster import ensure_ray, import_ray
from rftkit.rollout.base import GENERATORS, SamplingParams
from rftkit.rollout.weights import bump, version
from rftkit.types import Generation

MAX_RESTARTS = 3
"""Replacements of one chunk's actor within one call before the call fails."""


def chunk_seed(seed: int, c: int) -> int:
    """Sampling seed of chunk c of a call with `seed`: the seed itself for chunk 0, else a
    56-bit hash of (seed, c), so chunks draw independent streams."""
    if c == 0:
        return seed
    return int.from_bytes(hashlib.blake2b(f"{seed}/{c}".encode(), digest_size=7).digest(), "big")


def chunk_bounds(n: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) prompt ranges, one per actor used (at most n), sizes differing by at
    most one, the larger first. n = 0 gives one empty chunk (the engine reports it)."""
    k = max(1, min(workers, n))
    size, extra = divmod(n, k)
    out, lo = [], 0
    for c in range(k):
        hi = lo + size + (c < extra)
        out.append((lo, hi))
        lo = hi
    return out


def concat_generations(parts: list[Generation], pad_id: int) -> Generation:
    """Rows of `parts` in order, right-padded to the widest: tokens with pad_id, logp and mask with 0."""
    if len(parts) == 1:
        return parts[0]
    t = max(g.tokens.shape[1] for g in parts)

    def cat(field: str, value) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(getattr(g, field), (0, t - g.tokens.shape[1]), value=value)
                          for g in parts])

    return Generation(tokens=cat("tokens", pad_id), logp=cat("logp", 0.0), mask=cat("mask", 0.0),
                      prompt_lens=torch.cat([g.prompt_lens for g in parts]),
                      truncated=torch.cat([g.truncated for g in parts]),
                      texts=[x for g in parts for x in g.texts])


def cpu_state(model) -> dict[str, torch.Tensor]:
    """The state dict of `model` on the CPU (what travels to the actors)."""
    return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}


def _portable(model):
    """`model` itself when its tensors are on the CPU, else a CPU copy: an actor without a GPU
    cannot unpickle CUDA tensors (one with a GPU moves its copy there)."""
    if all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()]):
        return model
    return copy.deepcopy(model).to("cpu")


class RolloutWorker:
    """One actor: its copy of the policy and an engine over it (run as a Ray actor)."""

    def __init__(self, model, tok, engine_name: str, threads: int, device: str, state=None) -> None:
        torch.set_num_threads(threads)
        import rftkit.rollout  # noqa: F401  (registers the engines)

        self.model = model.to(device)  # "cuda": the GPU Ray gave this actor (dist.gpus_per_worker)
        if state is not None:
            self.load(state)
        self.engine = GENERATORS.bind(engine_name)(self.model, tok)

    def pid(self) -> int:
        return os.getpid()

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
        bump(self.model)  # an engine holding its own copy (vLLM) reloads before it samples again

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Generation:
        return self.engine.generate(prompts, params)


class RolloutService:
    """A Generator whose `generate` runs on `dist_cfg.rollout_workers` Ray actors (see the module
    docstring). threads: torch threads of each actor (0 = the driver's current count)."""

    def __init__(self, engine_name: str, model, tok, dist_cfg, threads: int = 0) -> None:
        ensure_ray(dist_cfg)
        self._ray = ray = import_ray()
        self.model, self.tok, self.engine_name = model, tok, engine_name
        self.threads = threads or torch.get_num_threads()
        self.device = "cuda" if dist_cfg.gpus_per_worker > 0 else "cpu"
        self._actor = ray.remote(num_cpus=dist_cfg.cpus_per_worker, num_gpus=dist_cfg.gpus_per_worker,
                                 max_restarts=0)(RolloutWorker)
        self._version = version(model)
        self._model_ref = ray.put(_portable(model))  # sent once; replacements start from it too
        self._state_ref = None  # the weights of the last sync, when they moved since the model ref
        self.restarts = 0
        self.workers = [self._spawn() for _ in range(dist_cfg.rollout_workers)]
        self._loaded = [self._version] * len(self.workers)
        try:
            ray.get([w.pid.remote() for w in self.workers])  # construction errors surface here
        except Exception:
            self.close()
            raise

    def _spawn(self):
        return self._actor.remote(self._model_ref, self.tok, self.engine_name, self.threads, self.device,
                                  self._state_ref)

    def _replace(self, c: int) -> None:
        """A new actor in slot c, with the weights of the last sync."""
        self._ray.kill(self.workers[c], no_restart=True)
        self.workers[c] = self._spawn()
        self._loaded[c] = self._version
        self.restarts += 1

    def _sync(self) -> None:
        """Send the current weights to every actor that has older ones (one put per version)."""
        ray = self._ray
        v = version(self.model)
        if v != self._version:
            self._state_ref, self._version = ray.put(cpu_state(self.model)), v
        stale = {w.load.remote(self._state_ref): c for c, w in enumerate(self.workers) if self._loaded[c] != v}
        for ref, c in stale.items():
            try:
                ray.get(ref)
                self._loaded[c] = v
            except _died(ray):
                self._replace(c)  # the replacement starts with these weights

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Generation:
        ray = self._ray
        self._sync()
        chunks = chunk_bounds(len(prompts), len(self.workers))
        args = [(prompts[lo:hi], replace(params, seed=chunk_seed(params.seed, c))) for c, (lo, hi) in enumerate(chunks)]
        running = {self.workers[c].generate.remote(*a): c for c, a in enumerate(args)}
        done: dict[int, Generation] = {}
        deaths = [0] * len(chunks)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            c = running.pop(ready[0])
            try:
                done[c] = ray.get(ready[0])
            except _died(ray) as e:
                deaths[c] += 1
                if deaths[c] > MAX_RESTARTS:
                    raise RuntimeError(f"rollout worker {c} (of dist.rollout_workers={len(self.workers)}) died "
                                       f"{deaths[c]} times in one call; last: {type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}. See the Ray logs "
                                       f"(/tmp/ray/session_latest/logs) for why (out of memory?)") from None
                self._replace(c)
                running[self.workers[c].generate.remote(*args[c])] = c  # same prompts, same seed
        return concat_generations([done[c] for c in range(len(chunks))], self.tok.pad_id)

    def worker_pids(self) -> list[int]:
        """Process id of each actor, in slot order."""
        return self._ray.get([w.pid.remote() for w in self.workers])

    def metrics(self) -> dict[str, float]:
        """dist/rollout_restarts: actors replaced since the start; dist/rollout_workers: actors."""
        return {"dist/rollout_restarts": float(self.restarts), "dist/rollout_workers": float(len(self.workers))}

    def close(self) -> None:
        for w in self.workers:
            self._ray.kill(w, no_restart=True)
        self.workers = []


def _died(ray) -> type[Exception]:
    """The error of a call on an actor that is gone (ActorDiedError) or unreachable
    (ActorUnavailableError: it is replaced all the same)."""
    return ray.exceptions.RayActorError


__all__ = ["RolloutService", "RolloutWorker", "chunk_seed", "chunk_bounds", "concat_generations"]
