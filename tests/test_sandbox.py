"""The code sandbox: hostile programs are contained and scored 0 within their limits, and the
caller goes on. Each containment case runs under the full isolation (as root: namespaces,
read-only root, fresh uid) and under the unprivileged fallback (rlimits + audit hook)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

import rftkit.rewards  # noqa: F401  (registers unit_tests)
from rftkit.rewards.code import extract_code
from rftkit.rewards.sandbox import SandboxLimits, run_python, run_tests
from rftkit.tasks.base import VERIFIERS
from rftkit.types import Problem

FAST = SandboxLimits(wall_time=3.0, cpu_time=1.0, memory_mb=512, output_bytes=1 << 16)
MODES = ["privileged", "fallback"] if os.geteuid() == 0 else ["fallback"]
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


def limits(mode: str, **kw) -> SandboxLimits:
    return SandboxLimits(**{**FAST.__dict__, "privileged": mode == "privileged", **kw})


def contained_and_zero(code: str, mode: str, budget: float, **kw):
    """Run `code` followed by the add() tests: must score 0 within `budget` seconds."""
    t0 = time.monotonic()
    res = run_tests(code, TESTS, limits(mode, **kw))
    elapsed = time.monotonic() - t0
    assert res.tests_passed == 0, res
    assert elapsed < budget, f"took {elapsed:.1f}s"
    return res


def test_normal_program_runs_and_reports_isolation():
    res = run_python("print('hello')\nimport math\nprint(math.factorial(5))", FAST)
    assert res.ok and res.stdout == "hello\n120\n", res
    if os.geteuid() == 0:
        assert res.isolation["uid"] is not None and res.isolation["netns"] and res.isolation["readonly_root"]
    good = run_tests("def add(a, b):\n    return a + b", TESTS, FAST)
    assert (good.tests_passed, good.tests_total) == (3, 3)
    partial = run_tests("def add(a, b):\n    return 3", TESTS, FAST)
    assert partial.test_results == (1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_is_killed_at_the_cpu_limit(mode):
    res = contained_and_zero("while True:\n    pass", mode, budget=3.5)
    assert res.exit_code in (-24, -9) and "killed" in res.summary()


def test_sleeping_program_is_killed_at_the_wall_limit():
    t0 = time.monotonic()
    res = run_python("import time\ntime.sleep(60)", limits(MODES[0], wall_time=1.0))
    assert res.killed == "wall_time" and time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb(mode):
    res = contained_and_zero("import os\nwhile True:\n    os.fork()", mode, budget=3.5)
    assert "os.fork" in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="per-run uid needs root")
def test_fork_bomb_with_subprocess_allowed_is_bounded_by_nproc_and_reaped():
    code = ("import os, sys, time\nn = 0\nfor _ in range(200):\n    try:\n        if os.fork() == 0:\n"
            "            time.sleep(60)\n        n += 1\n    except OSError:\n        break\n"
            "print(n, file=sys.stderr, flush=True)\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n")
    res = run_python(code, limits("privileged", allow_subprocess=True, max_processes=8, wall_time=1.5))
    assert int(res.stderr.split()[0]) <= 7, res.stderr  # 8 processes in all, the main one included
    uid = res.isolation["uid"]
    alive = [p for p in os.listdir("/proc") if p.isdigit() and _owner(p) == uid and not _zombie(p)]
    assert not alive, f"left running: {alive}"


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _zombie(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


@pytest.mark.parametrize("mode", MODES)
def test_memory_bomb(mode):
    res = contained_and_zero("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))", mode, budget=3.5)
    assert "MemoryError" in res.stderr or res.exit_code < 0


@pytest.mark.parametrize("mode", MODES)
def test_writes_outside_the_work_dir_fail_and_leave_nothing(mode, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f"rftkit_sbx_{os.getpid()}_{mode}"
    targets = [f"/tmp/../etc/{name}", str(tmp_path / name), f"/tmp/{name}"]
    code = "".join(f"try:\n    open({t!r}, 'w').write('x')\nexcept OSError:\n    pass\n" for t in targets)
    code += "open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())"
    res = run_python(code, limits(mode))
    assert res.stdout.strip() == "ok", res
    for t in targets:
        assert not os.path.exists(t), f"{t} was written"
    contained_and_zero(f"open({str(tmp_path / name)!r}, 'w').write('x')", mode, budget=3.0)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("mode", MODES)
def test_parent_environment_is_not_visible(mode, monkeypatch):
    monkeypatch.setenv("RFTKIT_TEST_SECRET", "hunter2")
    code = ("import os\nprint(os.environ.get('RFTKIT_TEST_SECRET'))\nprint(sorted(os.environ))\n"
            "try:\n    print(open(f'/proc/{os.getppid()}/environ').read())\nexcept OSError as e:\n    print('denied')")
    res = run_python(code, limits(mode))
    assert "hunter2" not in res.stdout and res.stdout.splitlines()[0] == "None", res
    assert res.stdout.splitlines()[-1] == "denied"
    assert set(eval(res.stdout.splitlines()[1])) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_CTYPE"}


@pytest.mark.parametrize("mode", MODES)
def test_network_connection_fails(mode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                f"def add(a, b):\n    return a + b")
        res = contained_and_zero(code, mode, budget=3.0)
        assert "Error" in res.stderr
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root here")
def test_network_namespace_has_only_loopback():
    """The kernel layer under the audit hook: the program's network namespace is a new, empty one."""
    host = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    res = run_python("print(open('/proc/net/dev').read())", limits("privileged"))
    inside = {line.split(":")[0].strip() for line in res.stdout.splitlines()[2:] if ":" in line}
    assert res.ok and inside == {"lo"}, res
    assert res.isolation["netns"] and (host - {"lo"} or pytest.skip("the host has only loopback"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spawn", ["import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned'])",
                                   "import os\nos.system('echo pwned')", "import os\nos.execv('/bin/sh', ['sh'])"])
def test_spawning_a_shell_fails(mode, spawn):
    res = contained_and_zero(spawn + "\ndef add(a, b):\n    return a + b", mode, budget=3.0)
    assert "pwned" not in res.stdout and "not allowed" in res.stderr


@pytest.mark.parametrize("mode", MODES)
def test_printing_100_mb_is_capped(mode):
    t0 = time.monotonic()
    res = run_tests("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\n"
                    "def add(a, b):\n    return a + b", TESTS, limits(mode))
    assert res.killed == "output_limit" and len(res.stdout) <= FAST.output_bytes and res.tests_passed == 0
    assert time.monotonic() - t0 < 3.0


def test_fake_result_lines_do_not_count():
    code = ("import os, sys\nfor fd in range(3, 20):\n    try:\n"
            "        os.write(fd, b'x T 0 1\\nx T 1 1\\nx T 2 1\\n')\n"
            "    except OSError:\n        pass\nprint('T 0 1')\nos._exit(0)")
    assert run_tests(code, TESTS, FAST).tests_passed == 0


def test_caller_continues_after_hostile_programs():
    for code in ("while True:\n    pass", "import os\nwhile True:\n    os.fork()", "x = ' ' * 10**10"):
        run_python(code, limits(MODES[0], wall_time=1.5))
    assert run_tests("def add(a, b):\n    return a + b", TESTS, FAST).tests_passed == 3


def test_unit_tests_verifier_scores_fraction_and_all_or_nothing():
    verify = VERIFIERS.get("unit_tests")
    p = Problem("code", "Write add.", "", "unit_tests", meta={"tests": TESTS})
    right = "Here:\n```python\ndef add(a, b):\n    return a + b\n```"
    assert verify(p, right).score == 1.0
    half = "```python\ndef add(a, b):\n    return 3 if a == 1 else a + b + 1\n```"
    assert verify(p, half).score == pytest.approx(1 / 3)
    assert verify(p, half, scoring="all").score == 0.0
    assert verify(p, "not python at all (").score == 0.0
    he = Problem("code", "def add(a, b):\n", "", "unit_tests",
                 meta={"check": "def check(candidate):\n    assert candidate(2, 3) == 5", "entry_point": "add",
                       "prepend_prompt": True})
    assert verify(he, "    return a + b\n").score == 1.0
    assert extract_code("a ```python\nx = 1\n``` b ```py\ny = 2\n```") == "y = 2\n"


def test_unit_test_rewards_through_the_runner_run_in_parallel_and_contain_hostile_code():
    from rftkit.rewards import RewardRunner

    p = Problem("code", "Write add.", "", "unit_tests", meta={"tests": TESTS, "timeout": 1.5})
    programs = ["def add(a, b):\n    return a + b", "while True:\n    pass", "import os\nwhile True:\n    os.fork()",
                "x = bytearray(10**11)", "print('x' * 10**8)", "def add(a, b):\n    return 3"]
    with RewardRunner(workers=2, timeout=3.0) as runner:
        t0 = time.monotonic()
        verdicts, metrics = runner.score([p] * len(programs), [f"```python\n{c}\n```" for c in programs])
        elapsed = time.monotonic() - t0
    assert [round(v.reward, 3) for v in verdicts] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.333]
    assert metrics["reward/errors"] == metrics["reward/timeouts"] == 0  # contained by the sandbox itself
    assert elapsed < 6.0, elapsed
