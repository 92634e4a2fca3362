"""Fault tolerance of the Ray workers: kill -9 a worker, lose nothing.

A rollout actor killed between calls (with a weight sync pending) or in the middle of one is
replaced, given the current weights, and its chunk re-issued with the same seed: the call
returns the Generation it would have returned, and `dist/rollout_restarts` counts it. A
reward task whose worker is killed is run again by Ray and its score is not lost.

The kill lands mid-call deterministically: `StallingTokenizer.decode` (the engine decodes every
step when stop strings are set) writes its process id to a file and sleeps, once; the test
kills that process. Workers unpickle this module's classes by value (registered below).

The whole-run case (a rollout worker killed mid-run; the run finishes with the same samples,
rewards, losses and weights as the uninterrupted one) is in tests/test_dist_run.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import replace

import pytest
import torch

ray = pytest.importorskip("ray")

from test_dist_rollout import cluster, tiny_gpt  # noqa: E402, F401  (the module's Ray cluster, autouse)

from rftkit.config_parts import DistCfg  # noqa: E402
from rftkit.dist.reward_workers import RayRewardPool  # noqa: E402
from rftkit.dist.rollout_workers import (  # noqa: E402
    MAX_RESTARTS,
    RolloutService,
    chunk_bounds,
    chunk_seed,
    concat_generations,
)
from rftkit.model.tokenizer import CharTokenizer  # noqa: E402
from rftkit.rewards import Component, RewardRunner, RewardSpec, load_reward_fn  # noqa: E402
from rftkit.rollout.base import GENERATORS, SamplingParams  # noqa: E402
from rftkit.rollout.weights import bump  # noqa: E402
from rftkit.types import Problem  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import tests/

TOK = CharTokenizer()
TEXTS = ["add:12+3=", "str:reverse(abcdef)=", "x=", "sort:5,3,9,1=", "q"]
PARAMS = SamplingParams(n=2, max_new_tokens=16, temperature=1.0, seed=5, stop=("never stops here",))


class StallingTokenizer(CharTokenizer):
    """CharTokenizer whose first decode in a process other than the driver writes the process
    id to `marker` and sleeps (die=True: kills its own process at every such decode)."""

    def __init__(self, marker: str, die: bool = False) -> None:
        super().__init__()
        self.marker, self.die, self.driver = marker, die, os.getpid()

    def decode(self, ids: list[int]) -> str:
        if os.getpid() != self.driver:
            if self.die:
                os.kill(os.getpid(), signal.SIGKILL)
            if not os.path.exists(self.marker):
                with open(self.marker, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(60)
        return super().decode(ids)


def prompts() -> list[list[int]]:
    return [[TOK.bos_id] + TOK.encode(t) for t in TEXTS]


def in_process(model, tok, ps, params, workers: int):
    """What `workers` actors return: the chunks sampled in-process with the chunk seeds."""
    engine = GENERATORS.bind("kv")(model, tok)
    return concat_generations([engine.generate(ps[lo:hi], replace(params, seed=chunk_seed(params.seed, c)))
                               for c, (lo, hi) in enumerate(chunk_bounds(len(ps), workers))], tok.pad_id)


def assert_same(got, want) -> None:
    for f in ("tokens", "logp", "mask", "prompt_lens", "truncated"):
        assert torch.equal(getattr(got, f), getattr(want, f)), f
    assert got.texts == want.texts


def _wait_for(path, seconds: float = 60.0) -> int:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if os.path.exists(path) and open(path).read():
            return int(open(path).read())
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {seconds}s")


def test_a_worker_killed_between_calls_is_replaced_with_the_current_weights():
    model = tiny_gpt(3)
    svc = RolloutService("kv", model, TOK, DistCfg(rollout_workers=2), threads=torch.get_num_threads())
    try:
        ps = prompts()
        assert_same(svc.generate(ps, PARAMS), in_process(model, TOK, ps, PARAMS, 2))
        pids = svc.worker_pids()
        os.kill(pids[1], signal.SIGKILL)
        with torch.no_grad():  # an optimizer step's worth of change, and its bump: a sync is pending
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        bump(model)
        assert_same(svc.generate(ps, PARAMS), in_process(model, TOK, ps, PARAMS, 2))
        assert svc.metrics() == {"dist/rollout_restarts": 1.0, "dist/rollout_workers": 2.0}
        new = svc.worker_pids()
        assert new[0] == pids[0] and new[1] != pids[1]
    finally:
        svc.close()


def test_a_worker_killed_during_a_call_loses_no_sample(tmp_path):
    model = tiny_gpt(4)
    tok = StallingTokenizer(str(tmp_path / "stalled_pid"))
    svc = RolloutService("kv", model, tok, DistCfg(rollout_workers=1), threads=torch.get_num_threads())
    try:
        out, pids = {}, svc.worker_pids()
        call = threading.Thread(target=lambda: out.update(gen=svc.generate(prompts(), PARAMS)), daemon=True)
        call.start()
        pid = _wait_for(tok.marker)  # the actor is inside the call, sleeping in decode
        assert pid == pids[0]
        os.kill(pid, signal.SIGKILL)
        call.join(60)
        assert not call.is_alive()
        assert_same(out["gen"], GENERATORS.bind("kv")(model, tok).generate(prompts(), PARAMS))
        assert svc.metrics()["dist/rollout_restarts"] == 1.0
    finally:
        svc.close()


def test_a_worker_that_keeps_dying_fails_the_call(tmp_path):
    tok = StallingTokenizer(str(tmp_path / "unused"), die=True)
    svc = RolloutService("kv", tiny_gpt(), tok, DistCfg(rollout_workers=1), threads=1)
    try:
        with pytest.raises(RuntimeError, match=rf"rollout worker 0 .* died {MAX_RESTARTS + 1} times in one call"):
            svc.generate(prompts()[:1], replace(PARAMS, max_new_tokens=2))
        assert svc.metrics()["dist/rollout_restarts"] == MAX_RESTARTS
    finally:
        svc.close()


REWARD_FILE = '''
import os, time

def slow_once(prompts, completions, answers):
    marker = {marker!r}
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
    return [len(c) / 10 for c in completions]
'''


def test_a_reward_task_whose_worker_is_killed_is_retried(tmp_path):
    marker = tmp_path / "reward_pid"
    (tmp_path / "rewards.py").write_text(REWARD_FILE.format(marker=str(marker)))
    spec = RewardSpec((Component("len", fn=load_reward_fn(f"{tmp_path}/rewards.py:slow_once"), batch_size=2),))
    problems, completions = [Problem("t", "p", "5", "exact")] * 4, ["a", "bb", "ccc", "dddd"]
    with RewardRunner(spec, timeout=120.0, pool=RayRewardPool(1)) as runner:
        out = {}
        call = threading.Thread(target=lambda: out.update(r=runner.score(problems, completions)), daemon=True)
        t0 = time.monotonic()
        call.start()
        os.kill(_wait_for(marker), signal.SIGKILL)
        call.join(60)
        assert not call.is_alive() and time.monotonic() - t0 < 50  # retried, not waited out
    verdicts, metrics = out["r"]
    assert [v.reward for v in verdicts] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert metrics["reward/errors"] == metrics["reward/timeouts"] == 0
