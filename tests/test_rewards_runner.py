"""RewardSpec composition, shaping values, the RewardRunner's failure handling, user reward files."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import rftkit.rewards  # noqa: F401  (registers the verifiers)
from rftkit.errors import ConfigError
from rftkit.rewards import (
    Component,
    CosineLength,
    Overlong,
    RewardRunner,
    RewardSpec,
    cosine_length_reward,
    load_reward_fn,
    overlong_penalty,
    repetition_penalty,
    score_batch,
)
from rftkit.rewards.user_fn import RewardFnError
from rftkit.types import Problem

R1 = "<think>ok</think><answer>{}</answer>"


def P(answer: str, verifier: str = "numeric") -> Problem:
    return Problem("t", "What is it?", answer, verifier)


USER_FILE = '''
import os, time

def length_bonus(prompts, completions, answers):
    return [len(c) / 100 for c in completions]

def crash(prompts, completions, answers):
    raise ValueError("boom")

def hang(prompts, completions, answers):
    time.sleep(60)

def die(prompts, completions, answers):
    os._exit(3)

def wrong_length(prompts, completions, answers):
    return [1.0]

def not_numbers(prompts, completions, answers):
    return ["a"] * len(completions)

def digits(prompts, completions, answers):
    return "101"

def two_args(prompts, completions):
    return []

NOT_A_FUNCTION = 3
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "rewards.py"
    path.write_text(USER_FILE)
    return path


def test_cosine_length_reward_matches_the_paper_formula():
    r = cosine_length_reward([True, True, True, False, False, False, True], [0, 50, 100, 0, 50, 100, 99],
                             max_len=100, margin=1)
    assert r[:2] == pytest.approx([2.0, 1.5]) and r[3:5] == pytest.approx([-10.0, -5.0])
    assert r[2] == r[5] == r[6] == -10.0  # L + margin >= max_len: exceed penalty
    assert cosine_length_reward([True], [25], max_len=100)[0] == pytest.approx(1 + 0.5 * (1 + math.cos(math.pi / 4)))
    assert repetition_penalty("a b a b a b", ngram=2, max_penalty=-1.0) == pytest.approx(-(1 - 2 / 5))
    assert repetition_penalty("short", ngram=5, max_penalty=-1.0) == 0.0


def test_overlong_reuses_dapo():
    assert overlong_penalty([10, 75, 100, 150], max_len=100, cache_len=50) == pytest.approx([0.0, -0.5, -1.0, -1.0])


def test_weighted_sum_gate_and_component_metrics():
    spec = RewardSpec((Component("correct", "numeric"), Component("format", "r1_format", weight=0.1, gate=True)),
                      gate_penalty=-1.0)
    problems = [P("5")] * 4
    completions = [R1.format(5), R1.format(6), "5", "<think>x</think><answer>5</answer> tail"]
    with RewardRunner(spec) as runner:
        verdicts, metrics = runner.score(problems, completions)
    assert [v.reward for v in verdicts] == pytest.approx([1.1, 0.1, -1.0, -1.0])
    assert [v.score for v in verdicts] == [1.0, 0.0, 1.0, 1.0]  # the primary component's verdict
    assert verdicts[0].components == {"correct": 1.0, "format": 1.0}
    assert "gate format failed" in verdicts[2].reason
    assert metrics == {"reward/correct/mean": 0.75, "reward/format/mean": 0.5, "reward/errors": 0.0,
                       "reward/timeouts": 0.0}


def test_default_spec_uses_each_problems_own_verifier():
    problems = [P("5", "exact"), P("5", "numeric"), P("B", "multiple_choice"), P("5", "no_such_verifier")]
    scores, components, counts = score_batch(problems, ["#5", "\\boxed{5.0}", "The answer is (B)", "#5"])
    assert scores == [1.0, 1.0, 1.0, 0.0] and list(components) == ["correct"]
    assert counts.errors == 1 and "no_such_verifier" in counts.failures[0].message


def test_cosine_and_overlong_in_a_spec():
    spec = RewardSpec((Component("correct", "numeric"),), cosine=CosineLength(max_len=100),
                      overlong=Overlong(max_len=100, cache_len=50))
    with RewardRunner(spec) as runner:
        verdicts, metrics = runner.score([P("5")] * 3, ["\\boxed{5}", "\\boxed{5}", "\\boxed{4}"], lengths=[0, 75, 50])
        with pytest.raises(ValueError, match="lengths"):
            runner.score([P("5")], ["\\boxed{5}"])
    assert [v.reward for v in verdicts] == pytest.approx([2.0, 1 + 0.5 * (1 + math.cos(0.75 * math.pi)) - 0.5, -5.0])
    assert {"reward/cosine/mean", "reward/overlong/mean"} <= set(metrics)


def test_batch_fn_component_keeps_raw_scores(user_file):
    fn = load_reward_fn(f"{user_file}:length_bonus")
    spec = RewardSpec((Component("correct", "exact"), Component("len", fn=fn, weight=2.0, isolation="inline")))
    scores, components, _ = score_batch([P("5", "exact")] * 2, ["#5", "#6" + "x" * 298], spec)
    assert components["len"] == pytest.approx([0.02, 3.0]) and scores == pytest.approx([1.04, 6.0])


def test_user_fn_load_errors_name_file_and_function(user_file, tmp_path):
    with pytest.raises(ConfigError, match="expected 'path/to/file.py:function_name'"):
        load_reward_fn(str(user_file))
    with pytest.raises(ConfigError, match="file not found"):
        load_reward_fn(f"{tmp_path}/missing.py:fn")
    with pytest.raises(ConfigError, match=r"has no 'nope' \(callables: .*length_bonus"):
        load_reward_fn(f"{user_file}:nope")
    with pytest.raises(ConfigError, match="'NOT_A_FUNCTION' is a int"):
        load_reward_fn(f"{user_file}:NOT_A_FUNCTION")
    with pytest.raises(ConfigError, match=r"must accept \(prompts, completions, answers\)"):
        load_reward_fn(f"{user_file}:two_args")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_xyz\n")
    with pytest.raises(ConfigError, match=r"broken.py.*ModuleNotFoundError"):
        load_reward_fn(f"{broken}:fn")


def test_user_fn_call_errors_name_file_and_function(user_file):
    for name, match in [("crash", "raised ValueError: boom"), ("wrong_length", "returned 1 scores for 2"),
                        ("not_numbers", "must return a list of floats")]:
        fn = load_reward_fn(f"{user_file}:{name}")
        with pytest.raises(RewardFnError, match=rf"rewards.py:{name} .*{match}"):
            fn(["p", "p"], ["a", "b"], ["x", "y"])
    fn = pickle.loads(pickle.dumps(load_reward_fn(f"{user_file}:length_bonus")))
    assert fn(["p"], ["abc"], ["x"]) == [0.03]


@pytest.fixture(scope="module")
def process_runner(user_file):
    comps = tuple(Component(n, fn=load_reward_fn(f"{user_file}:{n}"), batch_size=2)
                  for n in ("length_bonus", "crash", "hang", "die"))
    with RewardRunner(RewardSpec(comps), workers=2, timeout=1.0, fallback=-0.5) as runner:
        yield runner.start()


def test_crashing_hanging_and_dying_fns_give_the_fallback_and_are_counted(process_runner):
    problems, completions = [P("5")] * 4, ["a" * 10, "b" * 20, "c", "d"]
    t0 = time.monotonic()
    verdicts, metrics = process_runner.score(problems, completions)
    assert time.monotonic() - t0 < 6.0
    assert metrics["reward/length_bonus/mean"] == pytest.approx((0.1 + 0.2 + 0.01 + 0.01) / 4)
    assert metrics["reward/crash/mean"] == metrics["reward/hang/mean"] == metrics["reward/die/mean"] == -0.5
    assert metrics["reward/timeouts"] == 4 and metrics["reward/errors"] == 8  # per sample: 2 calls x 2 samples
    failures = process_runner.last_failures
    hang = [f for f in failures if f.component == "hang"]
    assert all(f.kind == "timeout" for f in hang) and hang[0].completion == "a" * 10
    assert any("ValueError: boom" in f.message for f in failures if f.component == "crash")
    assert any("worker died" in f.message for f in failures if f.component == "die")
    assert "prompt='What is it?'" in failures[0].log_line()
    again, _ = process_runner.score(problems[:1], ["x" * 50])  # the pool recovered
    assert again[0].components["length_bonus"] == pytest.approx(0.5)


def test_inline_and_thread_failures_never_raise(user_file):
    def raising(prompts, completions, answers):
        raise RuntimeError("inline boom")

    def slow(prompts, completions, answers):
        time.sleep(3)
        return [1.0] * len(prompts)

    spec = RewardSpec((Component("a", fn=raising, isolation="inline"), Component("b", fn=slow, isolation="thread"),
                       Component("c", fn=lambda p, c, a: [float("nan")] * len(p), isolation="inline")))
    with RewardRunner(spec, workers=1, timeout=0.5) as runner:
        t0 = time.monotonic()
        verdicts, metrics = runner.score([P("1")], ["x"])
        assert time.monotonic() - t0 < 2.5
    assert metrics["reward/errors"] == 2 and metrics["reward/timeouts"] == 1
    assert verdicts[0].reward == 0.0


def test_spec_validation():
    with pytest.raises(ValueError, match="unique"):
        RewardSpec((Component("a"), Component("a")))
    with pytest.raises(ValueError, match="not both"):
        Component("a", verifier="exact", fn=lambda p, c, a: [])
    with pytest.raises(ValueError, match="primary"):
        RewardSpec((Component("a"),), primary="b")


def test_a_string_of_digits_is_not_read_as_scores(user_file):
    """"101" for three completions is a mistake, not the scores [1, 0, 1]."""
    fn = load_reward_fn(f"{user_file}:digits")
    with pytest.raises(RewardFnError, match=r"rewards.py:digits returned a str"):
        fn(["p"] * 3, ["a", "b", "c"], ["x"] * 3)
    spec = RewardSpec((Component("d", fn=lambda p, c, a: "101", isolation="inline"),
                       Component("b", fn=lambda p, c, a: b"\x01\x00\x01", isolation="inline")))
    with RewardRunner(spec, fallback=-1.0) as runner:
        verdicts, metrics = runner.score([P("1")] * 3, ["a", "b", "c"])
    assert metrics["reward/errors"] == 6 and metrics["reward/d/mean"] == metrics["reward/b/mean"] == -1.0
    messages = {f.component: f.message for f in runner.last_failures}
    assert "'d' returned a str ('101')" in messages["d"] and "'b' returned a bytes" in messages["b"]


def test_inline_calls_time_out():
    def spin(prompts, completions, answers):
        while True:
            pass

    def sleepy(prompts, completions, answers):
        time.sleep(30)

    spec = RewardSpec((Component("ok", "exact"), Component("spin", fn=spin, isolation="inline"),
                       Component("sleepy", fn=sleepy, isolation="inline")))
    runner, out = RewardRunner(spec, timeout=0.5), {}

    def score():  # on a daemon thread: without the timeout this test fails instead of hanging
        t0 = time.monotonic()
        out["first"] = runner.score([P("1")] * 2, ["#1", "#2"])
        out["seconds"] = time.monotonic() - t0
        out["failures"] = runner.last_failures
        out["again"] = runner.score([P("1")], ["#1"])  # the runner goes on

    guard = threading.Thread(target=score, daemon=True)
    guard.start()
    guard.join(timeout=10)
    assert "again" in out, "inline calls did not time out"
    runner.close()
    metrics = out["first"][1]
    assert out["seconds"] < 3.0 and metrics["reward/timeouts"] == 4 and metrics["reward/ok/mean"] == 0.5
    assert [f.kind for f in out["failures"]] == ["timeout"] * 4
    assert out["again"][1]["reward/ok/mean"] == 1.0


HANG_SCRIPT = """
    import sys, time
    from rftkit.rewards import Component, RewardRunner, RewardSpec
    from rftkit.types import Problem

    def hang(prompts, completions, answers):
        time.sleep(120)

    if __name__ == "__main__":
        runner = RewardRunner(RewardSpec((Component("h", fn=hang, isolation=sys.argv[1]),)), workers=1, timeout=0.5)
        _, metrics = runner.score([Problem("t", "q", "1", "exact")], ["x"])
        if sys.argv[2] == "close":
            runner.close()
        print(metrics["reward/timeouts"], time.time(), flush=True)
"""


@pytest.mark.parametrize("isolation", ["thread", "inline"])
@pytest.mark.parametrize("close", ["close", "no_close"])
def test_a_hanging_fn_does_not_keep_the_process_alive(tmp_path, isolation, close):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(HANG_SCRIPT))
    proc = subprocess.run([sys.executable, str(script), isolation, close], capture_output=True, text=True, timeout=30)
    ended = time.time()
    timeouts, scored_at = proc.stdout.split()
    assert proc.returncode == 0 and float(timeouts) == 1.0, proc.stderr[-2000:]
    assert ended - float(scored_at) < 5.0, f"the process lived {ended - float(scored_at):.1f}s after scoring"


def test_bound_verifiers_keep_their_declared_isolation():
    """The runner binds verifiers with their knobs (`Registry.bind` -> Bound); the math verifier
    must still run in a worker process, where a runaway big-integer power can be killed (on a
    thread it would hold the GIL for ever)."""
    from rftkit.rewards.spec import isolation_of
    from rftkit.tasks.base import VERIFIERS

    assert isolation_of(VERIFIERS.bind("math", {})) == "process"
    assert isolation_of(VERIFIERS.bind("math", {"inner_timeout": 3})) == "process"
    assert isolation_of(VERIFIERS.bind("exact", {})) == "inline"
