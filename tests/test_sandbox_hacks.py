"""Reward hacks against the code sandbox: programs that try to forge test
results instead of passing them, escapes of the work dir in the unprivileged fallback, detached
children, and a private TMPDIR. Every program here scores 0 and leaves nothing behind."""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import pytest

import rftkit.rewards  # noqa: F401  (registers unit_tests)
from rftkit.rewards import sandbox
from rftkit.rewards.sandbox import SandboxLimits, run_python, run_tests
from rftkit.tasks.base import VERIFIERS
from rftkit.types import Problem

FAST = SandboxLimits(wall_time=5.0, cpu_time=3.0, memory_mb=512, output_bytes=1 << 16)
MODES = ["privileged", "fallback"] if os.geteuid() == 0 else ["fallback"]
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
GOOD = "def add(a, b):\n    return a + b\n"


def limits(mode: str, **kw) -> SandboxLimits:
    return SandboxLimits(**{**FAST.__dict__, "privileged": mode == "privileged", **kw})


# Every forging program ends by writing "<candidate> T i 1" for each candidate nonce it found to
# every descriptor it may hold (the status pipe among them), and by printing them.
FORGE = '''
import os, re, sys
HEX = re.compile(r"[0-9a-f]{32}")
def forge(cands):
    lines = "".join(f"{n} T {i} 1\\n" for n in sorted(cands) for i in range(3)).encode()
    for fd in range(1, 64):
        try:
            os.write(fd, lines[:60000])
        except OSError:
            pass
def hexes(values):
    out = set()
    for v in values:
        if isinstance(v, (bytes, bytearray)):
            v = bytes(v).decode("latin-1")
        if isinstance(v, str):
            out.update(HEX.findall(v))
    return out
'''

HACKS = {
    "replace_exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\n",
    "replace_compile": ("import builtins\n_c = builtins.compile\n"
                        "builtins.compile = lambda src, name, mode, *a, **k: _c('pass', name, mode)\n"),
    "stack_frames": FORGE + '''
def scan():
    cands, f = set(), sys._getframe()
    while f is not None:
        cands |= hexes(f.f_locals.values())
        f = f.f_back
    for fr in sys._current_frames().values():
        while fr is not None:
            cands |= hexes(fr.f_locals.values())
            fr = fr.f_back
    forge(cands)
scan()
def add(a, b):
    scan()
    return None
''',
    "signal_handler": FORGE + '''
import signal, time
def scan(*_):
    cands, f = set(), sys._getframe()
    while f is not None:
        cands |= hexes(f.f_locals.values())
        cands |= hexes(v for v in f.f_globals.values() if isinstance(v, (str, bytes)))
        f = f.f_back
    forge(cands)
signal.signal(signal.SIGALRM, scan)
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
def add(a, b):
    time.sleep(0.02)
    return None
''',
    "gc_objects": FORGE + '''
import gc
def scan():
    cands = set()
    for o in gc.get_objects():
        if isinstance(o, dict):
            cands |= hexes(o.values())
        elif isinstance(o, (list, tuple)):
            cands |= hexes(o)
    forge(cands)
scan()
def add(a, b):
    scan()
    return None
''',
    "proc_self_mem": FORGE + '''
def scan():
    cands = set()
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    for line in open("/proc/self/maps"):
        parts = line.split()
        if parts[1].startswith("rw") and len(parts) < 6 or parts[-1] == "[heap]":
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if hi - lo > 256 << 20:
                continue
            try:
                cands.update(m.decode() for m in re.findall(rb"[0-9a-f]{32}", os.pread(fd, hi - lo, lo)))
            except OSError:
                pass
    forge(cands)
scan()
def add(a, b):
    scan()
    return None
''',
    "patch_harness_globals": '''
import __main__, os
if hasattr(__main__, "_report"):
    _r = __main__._report
    __main__._report = lambda fd, nonce, line: _r(fd, nonce, line[:-1] + "1" if line.startswith("T") else line)
_w = os.write
os.write = lambda fd, data: _w(fd, data.replace(b" 0\\n", b" 1\\n"))
def add(a, b):
    return None
''',
    "reenter_harness": FORGE + '''
import atexit
def add(a, b):
    atexit._run_exitfuncs()
    return None
''',
    "unraisable_hook": FORGE + '''
seen = set()
def walk(o, depth=0):
    if depth > 12 or id(o) in seen:
        return set()
    seen.add(id(o))
    out = hexes([o])
    try:
        parts = o.__reduce__() if not isinstance(o, (str, bytes, int, float, type(None))) else ()
    except Exception:
        parts = ()
    for p in parts if isinstance(parts, tuple) else ():
        for q in (p if isinstance(p, (tuple, list)) else (p,)):
            out |= walk(q, depth + 1)
    for name in ("args", "keywords", "func", "__self__"):
        if hasattr(o, name) and not isinstance(o, type):
            out |= walk(getattr(o, name), depth + 1)
    return out
def hook(u):
    forge(walk(u.object) | walk(u.exc_value))
sys.unraisablehook = hook
def add(a, b):
    return None
''',
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hack", sorted(HACKS))
def test_forging_test_results_scores_zero(hack, mode):
    res = run_tests(HACKS[hack], TESTS, limits(mode))
    assert res.tests_passed == 0, (res.test_results, res.stderr[-2000:])
    assert res.error is None, res.error


@pytest.mark.parametrize("mode", MODES)
def test_builtins_patched_by_the_program_do_not_reach_the_tests(mode):
    code = ("import builtins\nbuiltins.sorted = lambda *a, **k: [1, 2, 3]\nbuiltins.abs = lambda x: 0\n"
            "def f(x):\n    return x\n")
    tests = ["assert sorted(f([3, 1])) == [1, 2, 3]", "assert abs(f(5) - 1) < 1e-9"]
    res = run_tests(code, tests, limits(mode))
    assert res.test_results == (0, 0), res
    honest = run_tests("def f(x):\n    return [1, 2, 3] if isinstance(x, list) else 1", tests, limits(mode))
    assert honest.test_results == (1, 1), honest


@pytest.fixture(params=["landlock", "audit_hook_only"])
def fallback_layers(request, monkeypatch):
    """The fallback with its kernel layer (Landlock, where the kernel has it) and without it."""
    monkeypatch.setattr(sandbox, "USE_LANDLOCK", request.param == "landlock", raising=False)
    return request.param


ESCAPES = {
    "dir_fd": "d = os.open({out!r}, os.O_RDONLY)\nfd = os.open('dirfd.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d)\n"
              "os.write(fd, b'x')",
    "dir_fd_opener": "d = os.open({out!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
                     "open('opener.txt', 'w', opener=lambda p, f: os.open(p, f, dir_fd=d)).write('x')",
    "fchmod_readonly_fd": "fd = os.open({out!r} + '/victim', os.O_RDONLY)\nos.fchmod(fd, 0o777)",
    "sqlite_connect": "import sqlite3\nsqlite3.connect({out!r} + '/connect.db').execute('create table t(a)')",
    "sqlite_attach": "import sqlite3\nc = sqlite3.connect(':memory:')\n"
                     "c.execute(\"ATTACH DATABASE '{out}/attach.db' AS x\")\nc.execute('create table x.t(a)')",
    "fork_exec": "from multiprocessing.util import spawnv_passfds\n"
                 "spawnv_passfds(b'/bin/sh', [b'sh', b'-c', b'echo pwned > {out}/forkexec.txt'], ())\n"
                 "import time\ntime.sleep(0.5)",
    "posixsubprocess": "import _posixsubprocess, subprocess\n"
                       "subprocess._fork_exec = _posixsubprocess.fork_exec\n"
                       "import multiprocessing.util as u\n"
                       "u.spawnv_passfds(b'/bin/sh', [b'sh', b'-c', b'echo pwned > {out}/psp.txt'], ())\n"
                       "import time\ntime.sleep(0.5)",
}


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_fallback_blocks_writes_outside_the_work_dir(escape, fallback_layers, tmp_path):
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim").write_text("v")
    os.chmod(out / "victim", 0o600)
    code = "import os\n" + ESCAPES[escape].format(out=str(out)) + "\n" + GOOD
    res = run_tests(code, TESTS, limits("fallback"))
    assert sorted(p.name for p in out.iterdir()) == ["victim"], (res.stderr[-1500:], res.isolation)
    assert os.stat(out / "victim").st_mode & 0o777 == 0o600
    assert res.tests_passed == 0 or "not allowed" in res.stderr or "denied" in res.stderr.lower(), res


def test_fallback_kills_detached_children(fallback_layers):
    code = ("import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.write(w, str(os.getpid()).encode())\n        time.sleep(30)\n    os._exit(0)\n"
            "print(os.read(r, 32).decode(), flush=True)\n")
    res = run_python(code, limits("fallback", allow_subprocess=True))
    pid = int(res.stdout.split()[0])
    time.sleep(0.2)
    assert not _alive(pid), f"detached child {pid} outlived the run"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


@pytest.mark.skipif(os.geteuid() != 0, reason="a fresh sandbox uid needs root")
def test_private_tmpdir_still_runs_as_a_fresh_uid(tmp_path, monkeypatch):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    res = run_tests(GOOD, TESTS, limits("privileged"))
    assert res.tests_passed == 3, res


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a directory the sandbox cannot enter")
def test_unusable_tmpdir_is_an_error_not_a_silent_zero(tmp_path, monkeypatch):
    """Root in the fallback's user namespace loses DAC override: a 0700 TMPDIR of another user
    stands for any work dir the sandbox cannot enter. It must be a sandbox error, counted by
    the runner in reward/errors, not a score of 0 for every program."""
    from rftkit.rewards import Component, RewardRunner, RewardSpec
    from rftkit.rewards import code as code_module

    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 12345, 12345)
    monkeypatch.setattr(tempfile, "tempdir", str(foreign))
    res = run_tests(GOOD, TESTS, limits("fallback"))
    assert res.error and "work dir" in res.error, res
    monkeypatch.setattr(code_module, "SandboxLimits", functools.partial(SandboxLimits, privileged=False))
    p = Problem("code", "Write add.", "", "unit_tests", meta={"tests": TESTS})
    with pytest.raises(RuntimeError, match="sandbox"):
        VERIFIERS.get("unit_tests")(p, GOOD, wall_time=5.0)
    spec = RewardSpec((Component("tests", "unit_tests", params={"wall_time": 5.0}),))
    with RewardRunner(spec, workers=1, timeout=10.0) as runner:
        _, metrics = runner.score([p], [GOOD])
    assert metrics["reward/errors"] == 1.0, metrics
