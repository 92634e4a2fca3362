"""Worker processes with a hard per-call timeout: a call that hangs is killed with its worker.

`concurrent.futures.ProcessPoolExecutor` cannot cancel a running call, so a hung math-verify
call would hold a worker forever. Here every worker is a process with its own pipe; `map`
sends one call per idle worker, waits on the pipes with the nearest deadline, and on a
deadline SIGKILLs that worker and starts a new one (the other workers keep going). A worker
that dies (segfault, OOM kill) gives an "error" for its call and is replaced too.

Workers start from a forkserver that has imported rftkit.rewards once (registries filled,
torch imported), so replacing one costs milliseconds; each worker caps its data segment at
`memory_mb` (RLIMIT_DATA), so a blown-up sympy integer fails with MemoryError instead of
taking the machine. A call is `(key, fn, args)`; fn and args must pickle (module-level
functions, functools.partial of them, FileRewardFn).

`ThreadCalls` runs calls on daemon threads with the same per-call timeout, for code that needs
no process of its own ("thread" and "inline" isolation in the runner).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import resource
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait as wait_conns
from typing import Any

PRELOAD = ["rftkit.rewards._preload"]


def _context(start_method: str | None):
    method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _serve(conn, memory_mb: int) -> None:
    """Worker main loop: receive (key, fn, args), answer (key, (status, value))."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb:
        limit = memory_mb << 20
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit if hard == resource.RLIM_INFINITY else min(hard, limit)))
    import rftkit.rewards  # noqa: F401  (registers the verifiers under spawn too)

    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        key, payload = msg
        try:
            fn, args = pickle.loads(payload)  # here, so a call that cannot load is its own error
            out = ("ok", fn(*args))
        except BaseException as e:  # noqa: BLE001 - reported to the caller, never kills the worker
            out = ("error", f"{type(e).__name__}: {e}")
        try:
            conn.send((key, out))
        except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send((key, ("error", f"result could not be sent back: {type(e).__name__}: {e}")))


class _Worker:
    def __init__(self, ctx, memory_mb: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, memory_mb), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.key: Any = None
        self.deadline = 0.0

    def kill(self) -> None:
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, TypeError):
            pass
        self.proc.join(timeout=5)
        self.conn.close()


class WorkerPool:
    """`workers` processes; `map(calls, timeout)` -> {key: ("ok", value) | ("error" | "timeout", message)}."""

    def __init__(self, workers: int = 2, memory_mb: int = 4096, start_method: str | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.ctx, self.memory_mb = _context(start_method), memory_mb
        self.workers = [_Worker(self.ctx, memory_mb) for _ in range(workers)]
        self.restarts = 0
        self.failed_starts = 0  # workers that died before saying "ready" (cannot import, ...)

    def _replace(self, i: int) -> None:
        self.workers[i].kill()
        self.workers[i] = _Worker(self.ctx, self.memory_mb)
        self.restarts += 1

    def _dispatch(self, pending: deque, timeout: float, results: dict) -> None:
        for i, w in enumerate(self.workers):
            while w.ready and w.key is None and pending:
                key, fn, args = pending.popleft()
                try:
                    payload = pickle.dumps((fn, args))
                except Exception as e:  # noqa: BLE001 - fn or args do not pickle
                    results[key] = ("error", f"could not send the call to a worker: {type(e).__name__}: {e}")
                    continue
                try:
                    w.conn.send((key, payload))
                except (BrokenPipeError, EOFError, OSError):
                    pending.appendleft((key, fn, args))  # the idle worker died: replace, retry
                    self._replace(i)
                    break
                w.key, w.deadline = key, time.monotonic() + timeout

    def _receive(self, i: int, results: dict) -> None:
        w = self.workers[i]
        try:
            key, out = w.conn.recv()
        except (EOFError, OSError):
            if w.key is not None:
                results[w.key] = ("error", f"worker died (exit code {w.proc.exitcode})")
            self.failed_starts += not w.ready
            self._replace(i)
            return
        if key == "ready":
            w.ready = True
        else:
            results[key] = out
            w.key = None

    def map(self, calls: list[tuple[Any, Any, tuple]], timeout: float) -> dict[Any, tuple[str, Any]]:
        """Run every call with a per-call timeout (from the moment a worker receives it)."""
        pending, results = deque(calls), {}
        while pending or any(w.key is not None for w in self.workers):
            if self.failed_starts > 3 * len(self.workers):
                results.update({key: ("error", "reward workers cannot start") for key, _, _ in pending})
                pending.clear()
            self._dispatch(pending, timeout, results)
            busy = [w for w in self.workers if w.key is not None]
            waiting = busy + [w for w in self.workers if not w.ready]
            if not waiting:
                continue
            nearest = min((w.deadline for w in busy), default=time.monotonic() + 1.0)
            ready = wait_conns([w.conn for w in waiting], timeout=max(0.0, nearest - time.monotonic()))
            for i, w in enumerate(list(self.workers)):
                if w.conn in ready:
                    self._receive(i, results)
            now = time.monotonic()
            for i, w in enumerate(list(self.workers)):
                if w.key is not None and now >= w.deadline:
                    results[w.key] = ("timeout", f"no answer after {timeout:g}s (worker killed)")
                    self._replace(i)
        return results

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until every worker has started (imports done); False on timeout."""
        end = time.monotonic() + timeout
        while not all(w.ready for w in self.workers) and time.monotonic() < end:
            waiting = [w.conn for w in self.workers if not w.ready]
            ready = wait_conns(waiting, timeout=max(0.0, end - time.monotonic()))
            for i, w in enumerate(list(self.workers)):
                if w.conn in ready:
                    self._receive(i, {})
        return all(w.ready for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self.workers:
            w.proc.join(timeout=1)
            if w.proc.is_alive():
                w.kill()
        self.workers = []


class CallTimeout(Exception):
    """Raised inside a thread whose call was abandoned at its deadline."""


def _interrupt(ident: int) -> None:
    """Raise CallTimeout in thread `ident` at its next bytecode (a call blocked in C sees it when
    the C call returns): it stops a Python-level loop that would otherwise spin forever."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(CallTimeout))


class ThreadCalls:
    """`calls` [(key, fn, args)] on daemon threads, `workers` at a time, each with `timeout`
    seconds from its own start; `results()` waits: {key: ("ok", value) | ("error" | "timeout", message)}.

    Not concurrent.futures.ThreadPoolExecutor: its threads are joined when the interpreter exits,
    so one call that never returns keeps a finished training run alive. Here the threads are
    daemons; a call past its deadline is reported as a timeout, its thread abandoned (a new one
    takes the calls still pending) and sent CallTimeout. Nothing in-process can stop a call
    that holds the GIL inside one C operation (a huge integer power): such code needs a process.
    `prepare` runs first in each thread (the runner copies the caller's torch thread state).
    """

    def __init__(self, calls: list[tuple[Any, Any, tuple]], workers: int, timeout: float, prepare=None) -> None:
        self.pending, self.done = deque(calls), {}
        self.n, self.workers, self.timeout, self.prepare = len(calls), workers, timeout, prepare
        self.running: dict[int, tuple[Any, float]] = {}  # thread ident -> (key, deadline)
        self.cond, self.live = threading.Condition(), 0
        with self.cond:
            self._spawn()

    def _spawn(self) -> None:
        """With the lock held: threads up to `workers`, while calls are pending."""
        while self.live < min(self.workers, len(self.pending)):
            self.live += 1
            threading.Thread(target=self._work, name="rftkit-reward", daemon=True).start()

    def _work(self) -> None:
        me = threading.get_ident()
        try:
            if self.prepare is not None:
                self.prepare()
            while True:
                with self.cond:
                    if not self.pending:
                        self.live -= 1
                        return
                    key, fn, args = self.pending.popleft()
                    self.running[me] = (key, time.monotonic() + self.timeout)
                try:
                    out = ("ok", fn(*args))
                except BaseException as e:  # noqa: BLE001 - reported, never raised
                    out = ("error", f"{type(e).__name__}: {e}")
                with self.cond:
                    if self.running.pop(me, None) is None:
                        return  # abandoned at its deadline: too late
                    self.done[key] = out
                    if len(self.done) == self.n:
                        self.cond.notify_all()
        except BaseException:  # noqa: BLE001 - a CallTimeout landing after the call: the thread just ends
            pass

    def results(self) -> dict[Any, tuple[str, Any]]:
        with self.cond:
            while len(self.done) < self.n:
                now = time.monotonic()
                for ident, (key, deadline) in list(self.running.items()):
                    if deadline <= now:
                        del self.running[ident]
                        self.live -= 1
                        self.done[key] = ("timeout", f"no answer after {self.timeout:g}s (thread abandoned)")
                        _interrupt(ident)
                self._spawn()
                deadlines = [d for _, d in self.running.values()]
                if len(self.done) < self.n:
                    self.cond.wait(max(0.0, min(deadlines) - now) if deadlines else 0.01)
        return self.done


__all__ = ["WorkerPool", "ThreadCalls", "CallTimeout"]
