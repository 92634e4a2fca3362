"""RewardRunner: scores a batch with a RewardSpec; no reward call can stop or hang the caller.

    runner = RewardRunner(spec, workers=2, timeout=10.0, fallback=0.0)
    verdicts, metrics = runner.score(problems, completions, lengths)   # RewardVerdict per sample
    scores, components, counts = score_batch(problems, completions, spec, lengths=lengths)

Per component and sample the call runs where its isolation says (spec.py): "process" calls go
to a WorkerPool with a hard per-call timeout (the worker is killed), or to the `pool` given
(Ray tasks with the same semantics: rftkit/dist/reward_workers.py); "thread" calls (the code
sandbox, which enforces its own limits) run `workers` at a time on daemon threads, abandoned
after timeout + 1 s; "inline" calls (the built-in rule verifiers, reward models) run one after
the other on one daemon thread, abandoned after `timeout`, with the caller's torch thread state
(grad mode, CUDA device). Daemon threads, not a ThreadPoolExecutor: a call that never returns
must not keep the process alive after training. Not SIGALRM for inline calls: it works only on
the main thread, takes the process's one real-time timer from user code and cannot interrupt a
blocking C call either; an abandoned thread is sent an exception that stops a Python loop
(pool.ThreadCalls). A call that raises, times out, returns a non-finite score, the wrong number
of scores or a string instead of a list gets `fallback`, is counted in reward/errors or
reward/timeouts, and is kept as a RewardFailure with its prompt and completion
(`runner.last_failures`, and a logging warning).

Metrics: reward/<component>/mean for every component (plus reward/cosine/mean and
reward/overlong/mean when set), reward/errors, reward/timeouts.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

from rftkit.rewards.combine import combine
from rftkit.rewards.pool import ThreadCalls, WorkerPool
from rftkit.rewards.spec import Component, RewardFailure, RewardSpec, RewardVerdict, isolation_of
from rftkit.rewards.user_fn import RewardFnError, as_scores
from rftkit.tasks.base import VERIFIERS
from rftkit.types import Problem, Verdict

log = logging.getLogger("rftkit.rewards")


@dataclass
class RewardCounts:
    errors: int = 0
    timeouts: int = 0
    failures: list[RewardFailure] = field(default_factory=list)


class BatchScores(NamedTuple):
    scores: list[float]
    components: dict[str, list[float]]
    counts: RewardCounts


def _call_verifier(fn, problem: Problem, completion: str) -> Verdict:
    return fn(problem, completion)


def _call_batch(fn, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    return fn(prompts, completions, answers)


def _fail(message: str):
    raise LookupError(message)


def _caller_state():
    """The caller's thread-local torch state a reward fn may rely on, to set in the thread that
    runs inline calls: grad mode and the current CUDA device (a "cuda" tensor goes there).
    None when torch was never imported (it is not imported here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    grad = torch.is_grad_enabled()
    device = torch.cuda.current_device() if torch.cuda.is_initialized() else None

    def apply() -> None:
        torch.set_grad_enabled(grad)
        if device is not None:
            torch.cuda.set_device(device)

    return apply


class RewardRunner:
    """Scores batches with `spec`; owns the worker pools (close() or use as a context manager)."""

    def __init__(self, spec: RewardSpec = RewardSpec(), *, workers: int = 2, timeout: float = 10.0,
                 fallback: float = 0.0, memory_mb: int = 4096, log_failures: int = 3, pool=None) -> None:
        """pool: runs the "process" calls instead of a local WorkerPool (the same `map(calls,
        timeout)`, `wait_ready()`, `close()`), e.g. Ray tasks (rftkit.dist.reward_workers.ray_backend)."""
        self.spec, self.workers, self.timeout, self.fallback = spec, workers, timeout, fallback
        self.memory_mb, self.log_failures = memory_mb, log_failures
        self._backend = pool
        self._pool: WorkerPool | None = None
        self._bound: dict[tuple, object] = {}
        self.last_failures: list[RewardFailure] = []

    def __enter__(self) -> RewardRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> RewardRunner:
        """Start the worker processes now (not at the first "process" call) and wait for them."""
        if self._pool is None:
            self._pool = WorkerPool(self.workers, self.memory_mb) if self._backend is None else self._backend
        self._pool.wait_ready()
        return self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _verifier(self, name: str, params: dict):
        key = (name, tuple(sorted(params.items())))
        if key not in self._bound:
            self._bound[key] = VERIFIERS.bind(name, params, where=f"reward verifier '{name}'")
        return self._bound[key]

    def _plan(self, problems: list[Problem], completions: list[str]) -> list[tuple]:
        """Every call as (component, sample indices, mode, fn, args)."""
        calls = []
        for comp in self.spec.components:
            if comp.fn is not None:
                mode = comp.isolation if comp.isolation != "auto" else isolation_of(comp.fn)
                size = comp.batch_size or len(problems) or 1
                for lo in range(0, len(problems), size):
                    idx = list(range(lo, min(lo + size, len(problems))))
                    args = ([problems[i].prompt for i in idx], [completions[i] for i in idx],
                            [problems[i].answer for i in idx])
                    calls.append((comp, idx, mode, _call_batch, (comp.fn, *args)))
                continue
            for i, p in enumerate(problems):
                try:
                    fn = self._verifier(comp.verifier or p.verifier, comp.params)
                except KeyError as e:  # a problem naming an unknown verifier: that sample fails
                    calls.append((comp, [i], "inline", _fail, (str(e),)))
                    continue
                mode = comp.isolation if comp.isolation != "auto" else isolation_of(fn)
                calls.append((comp, [i], mode, _call_verifier, (fn, p, completions[i])))
        return calls

    def _run_inline(self, calls: list[tuple], raw: dict) -> None:
        """In order on one thread, each call with the runner's timeout."""
        raw.update(ThreadCalls([(k, c[3], c[4]) for k, c in enumerate(calls)], 1, self.timeout,
                               prepare=_caller_state()).results())

    def _submit_threads(self, calls: list[tuple]) -> ThreadCalls:
        """Thread calls enforce their own limits (the sandbox); the extra second only keeps the
        runner's timeout from firing before the sandbox's own wall-time kill has reported."""
        return ThreadCalls([(k, c[3], c[4]) for k, c in enumerate(calls)], self.workers, self.timeout + 1.0)

    def _run_processes(self, calls: list[tuple], raw: dict) -> None:
        if self._pool is None:
            self._pool = WorkerPool(self.workers, self.memory_mb) if self._backend is None else self._backend
        out = self._pool.map([(k, fn, args) for k, (_, _, _, fn, args) in enumerate(calls)], self.timeout)
        raw.update(out)

    def evaluate(self, problems: list[Problem], completions: list[str],
                 lengths: list[int] | None = None) -> tuple[list[RewardVerdict], BatchScores]:
        """Verdicts and (totals, per-component scores, counts) for a batch."""
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        calls = self._plan(problems, completions)
        by_mode = {m: [k for k, c in enumerate(calls) if c[2] == m] for m in ("inline", "process", "thread")}
        raw: dict[int, tuple[str, object]] = {}
        threads = self._submit_threads([calls[k] for k in by_mode["thread"]]) if by_mode["thread"] else None
        for mode, run in (("process", self._run_processes), ("inline", self._run_inline)):
            if by_mode[mode]:
                sub: dict[int, tuple] = {}
                run([calls[k] for k in by_mode[mode]], sub)
                raw.update({by_mode[mode][j]: v for j, v in sub.items()})
        if threads is not None:
            raw.update({by_mode["thread"][j]: v for j, v in threads.results().items()})
        verdicts, scores, counts = _collect(calls, raw, problems, completions, self.fallback)
        counts.failures.sort(key=lambda f: (f.component, f.index))
        self.last_failures = counts.failures
        for f in counts.failures[: self.log_failures]:
            log.warning(f.log_line())
        out = combine(self.spec, problems, completions, verdicts, scores, lengths)
        return out, BatchScores([v.reward for v in out], scores, counts)

    def score(self, problems: list[Problem], completions: list[str],
              lengths: list[int] | None = None) -> tuple[list[RewardVerdict], dict[str, float]]:
        """(one RewardVerdict per sample, metrics); `lengths` (completion tokens) are needed by
        the cosine and overlong shaping only."""
        verdicts, batch = self.evaluate(problems, completions, lengths)
        n = max(1, len(problems))
        metrics = {f"reward/{name}/mean": sum(v) / n for name, v in batch.components.items()}
        metrics.update({"reward/errors": float(batch.counts.errors), "reward/timeouts": float(batch.counts.timeouts)})
        return verdicts, metrics


def _collect(calls: list[tuple], raw: dict, problems: list[Problem], completions: list[str],
             fallback: float) -> tuple[dict[str, list[Verdict]], dict[str, list[float]], RewardCounts]:
    """Per component: a Verdict and a float per sample; failures replaced by the fallback."""
    n, counts = len(problems), RewardCounts()
    verdicts: dict[str, list[Verdict]] = {}
    scores: dict[str, list[float]] = {}
    for k, (comp, idx, _, _, _) in enumerate(calls):
        verdicts.setdefault(comp.name, [Verdict(fallback, None, "not scored")] * n)
        scores.setdefault(comp.name, [fallback] * n)
        status, value = raw.get(k, ("error", "no result"))
        got = _check(comp, status, value, len(idx))
        if isinstance(got, tuple):  # (kind, message): a failure
            kind, message = got
            counts.timeouts += len(idx) if kind == "timeout" else 0  # counted per sample
            counts.errors += len(idx) if kind == "error" else 0
            for i in idx:
                counts.failures.append(RewardFailure(comp.name, i, kind, message, problems[i].prompt, completions[i]))
                verdicts[comp.name][i] = Verdict(fallback, None, f"{kind}: {message}"[:300])
                scores[comp.name][i] = fallback
            continue
        for i, (v, x) in zip(idx, got):
            verdicts[comp.name][i] = v
            scores[comp.name][i] = x
    return verdicts, scores, counts


def _check(comp: Component, status: str, value, n: int):
    """[(Verdict, raw score)] for a good result, else (kind, message). A batch fn's raw score is
    unbounded (a reward model's logit); its Verdict holds it clipped to [0, 1]."""
    if status != "ok":
        return status, str(value)
    if comp.fn is None:
        if not isinstance(value, Verdict):
            return "error", f"verifier returned {type(value).__name__}, not a Verdict"
        if not math.isfinite(float(value.score)):
            return "error", f"verifier returned a non-finite score {value.score}"
        return [(value, float(value.score))]
    try:
        vals = as_scores(value, n, f"'{comp.name}'")
    except RewardFnError as e:
        return "error", str(e)
    return [(Verdict(min(max(x, 0.0), 1.0), None, f"{comp.name}={x:.4g}"), x) for x in vals]


def score_batch(problems: list[Problem], completions: list[str], spec: RewardSpec = RewardSpec(), *,
                lengths: list[int] | None = None, workers: int = 2, timeout: float = 10.0,
                fallback: float = 0.0) -> BatchScores:
    """One-off scoring: (totals [N], per-component scores {name: [N]}, RewardCounts)."""
    with RewardRunner(spec, workers=workers, timeout=timeout, fallback=fallback) as runner:
        return runner.evaluate(problems, completions, lengths)[1]


__all__ = ["RewardRunner", "RewardCounts", "BatchScores", "score_batch"]
