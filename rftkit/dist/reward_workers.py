"""The reward runner's "process" calls as Ray tasks (`dist.reward_workers`).

    runner = RewardRunner(spec, ..., pool=ray_backend(cfg.dist))   # instead of a local WorkerPool

`RayRewardPool` has the WorkerPool interface the runner uses (`map(calls, timeout)`,
`wait_ready()`, `close()`) with the same per-call semantics:
  - at most `workers` calls in flight (the rest wait in the driver);
  - a call that raises (or whose fn cannot load in the worker) is ("error", message);
  - a call still running `timeout` seconds after its task started is cancelled with
    `ray.cancel(force=True)` (its worker process is killed) and is ("timeout", message): the
    runner gives it the fallback and counts it in reward/timeouts. The task is a streaming
    generator that first yields STARTED, so the clock starts when a worker runs it, as in the
    local pool: a worker that Ray is still starting (after a cancel killed one: seconds, to
    import torch) costs the call nothing. A task that no worker starts within `start_timeout`
    is cancelled and a timeout too;
  - a call whose worker process dies (kill -9, a node lost, Ray's OOM killer) is run again by
    Ray, up to `max_retries` times (`max_retries`, for system failures only: an exception in
    the fn is not retried), so a killed reward worker loses no score; after that it is an error.
  - each call runs under a soft RLIMIT_DATA of `memory_mb`, restored afterwards (Ray reuses
    worker processes), so a blown-up sympy integer fails with MemoryError as in the local pool.
A retried call keeps the clock of its first start. Needs Ray's streaming generators
(`num_returns="streaming"`, Ray >= 2.9).
"""

from __future__ import annotations

import resource
import time
from collections import deque
from typing import Any

from rftkit.dist.cluster import ensure_ray, import_ray

STARTED = ("started", None)
START_TIMEOUT = 120.0
"""Seconds a submitted call may wait for a worker to start it (cluster busy, worker starting)."""


def run_call(fn, args: tuple, memory_mb: int) -> tuple[str, Any]:
    """One reward call in a Ray worker: ("ok", fn(*args)) or ("error", message), as pool._serve."""
    import rftkit.rewards  # noqa: F401  (registers the verifiers a Bound names)

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = memory_mb << 20
    capped = bool(memory_mb) and (hard == resource.RLIM_INFINITY or limit <= hard)
    if capped:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        return "ok", fn(*args)
    except BaseException as e:  # noqa: BLE001 - reported to the caller, never kills the worker
        return "error", f"{type(e).__name__}: {e}"
    finally:
        if capped:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _streamed_call(fn, args: tuple, memory_mb: int):
    """The task: first STARTED (the driver starts the call's clock when it sees it, so a worker
    that is still starting costs the call nothing), then run_call's result."""
    yield STARTED
    yield run_call(fn, args, memory_mb)


def _warm() -> None:
    """Import what reward calls use (torch, the verifiers) in a worker before the first call."""
    import rftkit.rewards._preload  # noqa: F401


class RayRewardPool:
    """Reward calls as Ray tasks, `workers` in flight, `cpus` CPUs each (see the module docstring)."""

    def __init__(self, workers: int, *, cpus: float = 1.0, memory_mb: int = 4096, max_retries: int = 3,
                 start_timeout: float = START_TIMEOUT) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._ray = ray = import_ray()
        self.workers, self.memory_mb, self.max_retries = workers, memory_mb, max_retries
        self.start_timeout = start_timeout
        self._task = ray.remote(_streamed_call).options(num_returns="streaming", num_cpus=cpus,
                                                        max_retries=max_retries, retry_exceptions=False)
        self._warm = ray.remote(_warm).options(num_cpus=cpus)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Run one warm-up task per worker slot (imports done); False if they take over `timeout`."""
        refs = [self._warm.remote() for _ in range(self.workers)]
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=timeout)
        return len(ready) == len(refs)

    def map(self, calls: list[tuple[Any, Any, tuple]], timeout: float) -> dict[Any, tuple[str, Any]]:
        """Run every (key, fn, args) call: {key: ("ok", value) | ("error" | "timeout", message)}."""
        ray = self._ray
        pending, results = deque(calls), {}
        running: dict[Any, _Call] = {}  # the task's ObjectRefGenerator -> its call
        while pending or running:
            while pending and len(running) < self.workers:
                key, fn, args = pending.popleft()
                try:
                    running[self._task.remote(fn, args, self.memory_mb)] = _Call(key, self.start_timeout)
                except Exception as e:  # noqa: BLE001 - fn or args do not pickle
                    results[key] = ("error", f"could not send the call to a worker: {type(e).__name__}: {e}")
            if not running:
                continue
            nearest = min(c.deadline for c in running.values())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, nearest - time.monotonic()))
            if ready:  # and any others that are done by now
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
            for gen in ready:
                self._advance(gen, running, results, timeout)
            now = time.monotonic()
            for gen, call in list(running.items()):
                if now >= call.deadline:
                    ray.cancel(gen, force=True)  # kills the worker process running it
                    del running[gen]
                    results[call.key] = ("timeout", f"no answer after {timeout:g}s (Ray task cancelled)" if
                                         call.started else f"no reward worker started it within "
                                         f"{self.start_timeout:g}s (Ray task cancelled)")
        return results

    def _advance(self, gen, running: dict, results: dict, timeout: float) -> None:
        """The next item of a call's task: its start (the clock starts) or its result."""
        call = running[gen]
        try:
            item = self._result(next(gen))
        except StopIteration:  # not expected: a task yields STARTED and then a result or an error
            item = ("error", "the reward task ended without a result")
        if item == STARTED:  # (a retried task does not repeat it: Ray skips the items already read)
            if not call.started:
                call.started, call.deadline = True, time.monotonic() + timeout
            return
        del running[gen]
        results[call.key] = item

    def _result(self, ref) -> tuple[str, Any]:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.WorkerCrashedError:
            return "error", f"reward worker died ({self.max_retries} retries)"
        except ray.exceptions.RayError as e:  # the call could not load or be sent back, OOM-killed, ...
            first = str(e).strip().splitlines()
            return "error", f"{type(e).__name__}: {first[0] if first else ''}"

    def close(self) -> None:
        """Nothing to stop: the tasks' worker processes belong to the Ray cluster."""


class _Call:
    """A call in flight: its key, whether its task has started, and when it times out (until it
    starts: when it must have started)."""

    def __init__(self, key, start_timeout: float) -> None:
        self.key, self.started, self.deadline = key, False, time.monotonic() + start_timeout


def ray_backend(dist_cfg, memory_mb: int = 4096) -> RayRewardPool | None:
    """The runner's `pool` for `dist_cfg.reward_workers` Ray tasks (Ray started or joined if
    needed), or None when reward_workers is 0 (the runner's local WorkerPool)."""
    if not dist_cfg.reward_workers:
        return None
    ensure_ray(dist_cfg)
    return RayRewardPool(dist_cfg.reward_workers, cpus=dist_cfg.cpus_per_worker, memory_mb=memory_mb)


__all__ = ["RayRewardPool", "ray_backend", "run_call"]
