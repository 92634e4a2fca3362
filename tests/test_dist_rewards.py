"""Reward calls as Ray tasks (rftkit/dist/reward_workers.py) and the checks of rftkit/dist/cluster.py.

The Ray pool must give the local runner's scores (math / exact verifiers, a user reward fn
in a file), contain and count a timeout like the local pool, and every bad `dist.*` input must
be a ConfigError naming the key before anything waits on it.
"""

from __future__ import annotations

import socket
import sys
import time

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("math_verify")

import rftkit.dist.cluster as cluster  # noqa: E402
from rftkit.config_parts import DistCfg  # noqa: E402
from rftkit.dist.reward_workers import RayRewardPool, ray_backend  # noqa: E402
from rftkit.errors import ConfigError  # noqa: E402
from rftkit.rewards import Component, RewardRunner, RewardSpec, load_reward_fn  # noqa: E402
from rftkit.types import Problem  # noqa: E402

USER_FILE = '''
import time

def length_bonus(prompts, completions, answers):
    return [len(c) / 100 + (a in c) for c, a in zip(completions, answers)]

def crash(prompts, completions, answers):
    raise ValueError("boom")

def hang(prompts, completions, answers):
    time.sleep(60)

def hog(prompts, completions, answers):
    if completions[0] == "big":
        bytearray(2 << 30)  # 2 GiB, over the 1 GiB cap
    return [float(len(bytearray(256 << 20)) > 0)] * len(completions)  # 256 MiB fits
'''

PROBLEMS = [Problem("m", "half?", "\\frac{1}{2}", "math"), Problem("m", "half?", "\\frac{1}{2}", "math"),
            Problem("m", "x^2=4, x>0?", "2", "math"), Problem("e", "6*7?", "42", "exact"),
            Problem("e", "6*7?", "42", "exact"), Problem("e", "6*7?", "42", "exact")]
COMPLETIONS = ["so it is $0.5$", "\\boxed{\\frac{2}{4}}", "x = 3 #3", "#42", "#41", "no marker"]


@pytest.fixture(scope="module", autouse=True)
def cluster_2cpu():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "rewards.py"
    path.write_text(USER_FILE)
    return path


class CountingPool(RayRewardPool):
    """The Ray pool, counting the calls it ran (so a test sees the calls really went to Ray)."""

    calls = 0

    def map(self, calls, timeout):
        self.calls += len(calls)
        return super().map(calls, timeout)


def test_ray_tasks_give_the_local_runners_scores(user_file):
    spec = RewardSpec((Component("correct"),  # each problem's verifier: math in a process, exact inline
                       Component("exact_p", verifier="exact", isolation="process"),
                       Component("len", fn=load_reward_fn(f"{user_file}:length_bonus"), batch_size=2)))
    with RewardRunner(spec, workers=2) as local:
        want = local.evaluate(PROBLEMS, COMPLETIONS)
    pool = CountingPool(2)
    with RewardRunner(spec, workers=2, pool=pool) as remote:
        got = remote.start().evaluate(PROBLEMS, COMPLETIONS)
    assert pool.calls == 3 + 6 + 3  # math samples, exact_p samples, len batches
    assert got == want
    assert want[1].components["correct"] == [1, 1, 0, 1, 0, 0] and want[1].components["exact_p"] == [0, 0, 0, 1, 0, 0]
    assert want[1].counts.errors == want[1].counts.timeouts == 0


def test_a_timeout_is_cancelled_and_counted_like_the_local_pool(user_file):
    comps = tuple(Component(n, fn=load_reward_fn(f"{user_file}:{n}"), batch_size=2)
                  for n in ("length_bonus", "crash", "hang"))
    problems, completions = [Problem("t", "p", "5", "exact")] * 4, ["a" * 10, "b5", "c", "d"]
    with RewardRunner(RewardSpec(comps), workers=2, timeout=2.0, fallback=-0.5) as local:
        want_v, want_m = local.score(problems, completions)
    with RewardRunner(RewardSpec(comps), timeout=2.0, fallback=-0.5, pool=RayRewardPool(2)) as remote:
        remote.start()
        t0 = time.monotonic()
        got_v, got_m = remote.score(problems, completions)
        assert time.monotonic() - t0 < 10.0  # two hanging calls of 60 s, cut at 2 s each
        assert got_m == want_m and [v.reward for v in got_v] == [v.reward for v in want_v]
        assert got_m["reward/timeouts"] == 4 and got_m["reward/errors"] == 4  # per sample
        assert got_m["reward/hang/mean"] == -0.5
        hang = [f for f in remote.last_failures if f.component == "hang"]
        assert [f.kind for f in hang] == ["timeout"] * 4 and "cancelled" in hang[0].message
        again, _ = remote.score(problems[:1], ["x" * 50])  # the pool goes on after the cancel
        assert again[0].components["length_bonus"] == pytest.approx(0.5)


def test_a_call_over_its_memory_cap_fails_alone(user_file):
    spec = RewardSpec((Component("hog", fn=load_reward_fn(f"{user_file}:hog"), batch_size=1),))
    with RewardRunner(spec, workers=1, memory_mb=1024) as local:
        want = local.score([Problem("t", "p", "5", "exact")] * 3, ["small", "big", "small"])
    with RewardRunner(spec, pool=RayRewardPool(1, memory_mb=1024)) as remote:
        got = remote.score([Problem("t", "p", "5", "exact")] * 3, ["small", "big", "small"])
        assert "MemoryError" in remote.last_failures[0].message
    assert [v.reward for v in got[0]] == [v.reward for v in want[0]] == [1.0, 0.0, 1.0]  # the worker goes on
    assert got[1] == want[1] and got[1]["reward/errors"] == 1


def test_ray_not_installed_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'rftkit\[dist\]'"):
        cluster.ensure_ray(DistCfg(reward_workers=1))


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "10.255.255.1:6379", "nohost"])
def test_an_address_that_does_not_answer_fails_fast(monkeypatch, address):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh driver
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init would retry for minutes"))
    monkeypatch.setattr(cluster, "PROBE_TIMEOUT", 1.0)
    cfg = DistCfg(rollout_workers=1, address=address.format(port=_unused_port()))
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"dist\.address=") as e:
        cluster.ensure_ray(cfg)
    assert time.monotonic() - t0 < 3.0
    assert "leave dist.address unset" in str(e.value)


def test_a_running_cluster_passes_the_probe():
    cluster.probe(ray.get_runtime_context().gcs_address)


def test_more_workers_than_the_cluster_holds(monkeypatch):
    with pytest.raises(ConfigError, match=r"ask the Ray cluster for 3 CPUs, but it has 2.*dist\.cpus_per_worker"):
        cluster.ensure_ray(DistCfg(rollout_workers=2, reward_workers=1))
    cluster.ensure_ray(DistCfg(rollout_workers=2, reward_workers=1, cpus_per_worker=0.5))  # fractions fit
    with pytest.raises(ConfigError, match=r"1 GPUs, but it has 0.*dist\.gpus_per_worker"):
        cluster.ensure_ray(DistCfg(rollout_workers=1, gpus_per_worker=1))
    assert cluster.needs(DistCfg(rollout_workers=2, reward_workers=3, learners=1, gpus_per_worker=0.5)) == \
        {"CPU": 6.0, "GPU": 1.5}
    assert ray_backend(DistCfg()) is None
    with pytest.raises(ValueError, match="workers must be >= 1"):
        RayRewardPool(0)


def test_the_reward_workers_key_reaches_the_runner(tmp_path):
    """`dist.reward_workers` through the builder the loop uses: the runner's process calls go
    to Ray tasks and score as locally; a reward section with nothing to run there is refused."""
    from rftkit.config import RewardCfg
    from rftkit.config_parts import DistCfg
    from rftkit.dist.reward_workers import RayRewardPool
    from rftkit.train.rewards_build import build_reward_runner

    cfg = RewardCfg(components=[{"name": "exact_p", "verifier": "exact", "isolation": "process"}])
    with build_reward_runner(cfg, None, None, tmp_path) as local:
        want = local.evaluate(PROBLEMS, COMPLETIONS)
    runner = build_reward_runner(cfg, None, None, tmp_path, DistCfg(reward_workers=1))
    with runner:
        assert isinstance(runner._pool, RayRewardPool)
        assert runner.evaluate(PROBLEMS, COMPLETIONS) == want
    inline = RewardCfg(components=[{"name": "exact_i", "verifier": "exact", "isolation": "inline"}])
    with pytest.raises(ConfigError, match="dist.reward_workers=1: no reward component runs in worker processes"):
        build_reward_runner(inline, None, None, tmp_path, DistCfg(reward_workers=1))
