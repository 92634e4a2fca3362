"""A sandbox for model-written Python: `run_python(code)` and `run_tests(code, tests)`.

Each call runs one program in a fresh interpreter (`python -I -B rftkit/rewards/_sandbox_boot.py`)
and returns a `SandboxResult`; nothing the program does can raise here. The interpreter is a
supervisor that never runs untrusted code; it forks the runner that does. How each limit is
enforced (docs/rewards.md has the table):

    separate process group     start_new_session=True; killpg(SIGKILL) at the end, always
    no leftover processes      the supervisor is a child subreaper: it SIGKILLs every descendant,
                               setsid daemons included; as root also a fresh uid per run, every
                               process of that uid killed
    wall time                  the parent's select loop deadline, then the kill above
    CPU time                   RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    memory                     RLIMIT_AS (allocation fails -> MemoryError)
    file size / disk           RLIMIT_FSIZE; as root the work dir is a tmpfs of `disk_mb`
    processes                  RLIMIT_NPROC (per sandbox uid as root, else on top of the current count)
    network                    a new network namespace (root, or an unprivileged user namespace);
                               always also sockets blocked by an audit hook
    filesystem                 as root: read-only / in a private mount namespace, the work dir the
                               only writable place, /root hidden, /proc with hidepid=2; Landlock
                               (writes only in the work dir, no execve) where the kernel has it;
                               always also an audit hook refusing writes outside the work dir
    environment                env = {PATH, HOME, TMPDIR, LANG} only; other processes' /proc hidden
    output                     stdout / stderr each capped at `output_bytes`; beyond, the run is killed
    subprocess / shell         refused by the audit hook unless allow_subprocess; NPROC bounds the rest

Results of tests come back on a private pipe, each line prefixed with a per-run nonce sent on
stdin, so a program printing fake results gets nothing; the bootstrap keeps the nonce out of
every Python object the program can reach (_sandbox_boot._plan). A run whose sandbox could not
be set up (e.g. a work dir the sandbox cannot enter) has `error` set: an error, not a score.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BOOT = str(Path(__file__).with_name("_sandbox_boot.py"))
USE_LANDLOCK = True  # tests turn it off to check the audit-hook-only fallback of older kernels
UID_BASE = 1_000_000  # sandbox uids: UID_BASE + 64 * (pid % 4096) + (run counter % 64)
_RUNS = itertools.count()
STATUS_CAP = 1 << 20


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): raised by verifiers so the runner counts an error."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run. Times in seconds, sizes in MiB unless named bytes."""

    wall_time: float = 10.0
    cpu_time: float = 5.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    disk_mb: int = 64
    max_processes: int = 16
    open_files: int = 64
    output_bytes: int = 1 << 20
    allow_subprocess: bool = False
    allow_network: bool = False
    privileged: bool = True
    """As root, use the root-only layers (namespaces, read-only mounts, a fresh uid); False runs
    the unprivileged fallback (rlimits + audit hook), as a non-root user would get."""


@dataclass(frozen=True)
class SandboxResult:
    """What happened. `killed` is "wall_time", "output_limit" or None; exit_code < 0 is a signal
    (-9 SIGKILL, -24 SIGXCPU: CPU limit). `isolation` reports which layers were in force."""

    exit_code: int | None
    stdout: str
    stderr: str
    killed: str | None
    wall_time: float
    cpu_time: float
    tests_passed: int = 0
    tests_total: int = 0
    test_results: tuple[int, ...] = ()
    isolation: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed is None and self.error is None

    def summary(self) -> str:
        if self.error:
            return f"sandbox error: {self.error}"
        if self.killed:
            return f"killed: {self.killed}"
        if self.exit_code == -signal.SIGXCPU or self.exit_code == -signal.SIGKILL:
            return "killed: cpu_time" if self.cpu_time >= 0.5 else f"killed by signal {-self.exit_code}"
        tail = self.stderr.strip().splitlines()[-1:] if self.exit_code else []
        return f"exit {self.exit_code}" + (f": {tail[0][:200]}" if tail else "")


def run_python(code: str, limits: SandboxLimits = SandboxLimits(), stdin: str = "",
               python: str | None = None) -> SandboxResult:
    """Run a program as __main__ in the sandbox; its stdout / stderr are captured (capped)."""
    return _execute({"code": code, "stdin": stdin}, limits, python)


def run_tests(code: str, tests: list[str], limits: SandboxLimits = SandboxLimits(), setup: str = "",
              python: str | None = None) -> SandboxResult:
    """Run `code`, then `setup`, then each test (a statement block, e.g. "assert f(2) == 4") in the
    same namespace; a test passes when it raises nothing. tests_passed counts reported passes."""
    return _execute({"code": code, "tests": list(tests), "setup": setup}, limits, python)


def _sandbox_uid(limits: SandboxLimits) -> int | None:
    if not limits.privileged or os.geteuid() != 0:
        return None
    return UID_BASE + 64 * (os.getpid() % 4096) + next(_RUNS) % 64


def _user_tasks() -> int:
    """Tasks (threads included) of this real uid: RLIMIT_NPROC counts them all."""
    uid, n = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return n


def _job(spec: dict, limits: SandboxLimits, workdir: str, uid: int | None, status_fd: int) -> dict:
    # without a fresh uid NPROC counts the user's tasks, the supervisor included
    nproc = limits.max_processes if uid is not None else _user_tasks() + 1 + limits.max_processes
    cpu, mem, fsize = max(1, math.ceil(limits.cpu_time)), limits.memory_mb << 20, limits.file_size_mb << 20
    rlimits = [("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", mem, mem), ("RLIMIT_FSIZE", fsize, fsize),
               ("RLIMIT_NOFILE", limits.open_files, limits.open_files), ("RLIMIT_CORE", 0, 0),
               ("RLIMIT_NPROC", nproc, nproc)]
    return {**spec, "workdir": workdir, "uid": uid, "limits": asdict(limits), "rlimits": rlimits,
            "status_fd": status_fd, "nonce": secrets.token_hex(16), "allow_subprocess": limits.allow_subprocess,
            "allow_network": limits.allow_network, "landlock": USE_LANDLOCK}


def _clean_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}


def _execute(spec: dict, limits: SandboxLimits, python: str | None) -> SandboxResult:
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="rftkit-sbx-")
    uid = _sandbox_uid(limits)
    status_r, status_w = os.pipe()
    proc = None
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        job = _job(spec, limits, workdir, uid, status_w)
        proc = subprocess.Popen([python or sys.executable, "-I", "-B", BOOT], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                                env=_clean_env(workdir), start_new_session=True, pass_fds=(status_w,))
        os.close(status_w)
        status_w = -1
        _send(proc, job)
        pipes = _Pipes(proc, status_r, limits)
        killed = pipes.wait(start + limits.wall_time)
        _stop(proc, pipes)
        status = _parse_status(pipes.bufs["status"], job["nonce"], len(spec.get("tests") or []))
        _kill_all(proc.pid, uid, None if status["X"] else status["C"])
        pipes.drain(time.monotonic() + 0.5)
        status = _parse_status(pipes.bufs["status"], job["nonce"], len(spec.get("tests") or []))
        exit_code, cpu = _reap(proc)
        return _result(pipes.bufs, status, killed, exit_code, cpu, time.monotonic() - start, workdir)
    except Exception as e:  # noqa: BLE001 - the sandbox never raises into the reward loop
        if proc is not None:
            _kill_all(proc.pid, uid)
            _reap(proc)
        return SandboxResult(None, "", "", None, time.monotonic() - start, 0.0, error=f"{type(e).__name__}: {e}")
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _send(proc: subprocess.Popen, job: dict) -> None:
    """The job; stdin then stays open: closing it tells the supervisor to stop the run."""
    try:
        proc.stdin.write((json.dumps(job) + "\n").encode())
        proc.stdin.flush()
    except OSError:
        pass  # the interpreter died before reading its job: an error (no "S" line)


def _stop(proc: subprocess.Popen, pipes: _Pipes) -> None:
    """Let the supervisor kill and reap what is left (it reports the runner's exit status)."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    pipes.wait(time.monotonic() + 1.0)


class _Pipes:
    """stdout, stderr and the status pipe of one run, read without blocking, each with a cap."""

    def __init__(self, proc: subprocess.Popen, status_fd: int, limits: SandboxLimits) -> None:
        self.pid, self.limits = proc.pid, limits
        self.names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", status_fd: "status"}
        self.bufs = {name: bytearray() for name in self.names.values()}
        self.sel = selectors.DefaultSelector()
        for fd in self.names:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        try:  # readable when the process exits: no polling latency
            self.pidfd = os.pidfd_open(proc.pid)
            self.sel.register(self.pidfd, selectors.EVENT_READ)
        except (AttributeError, OSError):
            self.pidfd = None

    def _exited(self) -> bool:
        """Without reaping it (wait4 later reads its CPU time)."""
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def _read(self, fd: int) -> bool:
        """Read what is there; True when stdout or stderr went over the cap."""
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            self.sel.unregister(fd)
            return False
        name = self.names[fd]
        cap = STATUS_CAP if name == "status" else self.limits.output_bytes
        buf = self.bufs[name]
        over = len(buf) + len(chunk) > cap
        buf += chunk[: max(0, cap - len(buf))]
        return over and name != "status"

    def wait(self, deadline: float) -> str | None:
        """Until the main process exits (None), the deadline or the output cap (the reason)."""
        while not self._exited():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "wall_time"
            for key, _ in self.sel.select(remaining if self.pidfd is not None else min(remaining, 0.01)):
                if key.fd != self.pidfd and self._read(key.fd):
                    return "output_limit"
        return None

    def drain(self, deadline: float) -> None:
        """After the kill: what is still buffered, until every writer is gone (bounded)."""
        if self.pidfd is not None:
            self.sel.unregister(self.pidfd)
            os.close(self.pidfd)
        while self.sel.get_map() and time.monotonic() < deadline:
            for key, _ in self.sel.select(0.02):
                self._read(key.fd)
        self.sel.close()


def _kill_all(pgid: int, uid: int | None, runner: int | None) -> None:
    """The last resort, whatever the supervisor did: its group, the runner's group (when the
    supervisor did not report it reaped: the pid cannot have been reused), the sandbox uid."""
    for group in (pgid, runner):
        try:
            os.killpg(group, signal.SIGKILL) if group else None
        except (ProcessLookupError, PermissionError):
            pass
    if uid is not None:
        _kill_uid(uid)


def _kill_uid(uid: int) -> None:
    """SIGKILL every live process owned by the sandbox uid, also those that left the process group."""
    for _ in range(50):
        found = False
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.stat(f"/proc/{pid}").st_uid == uid and not _zombie(pid):
                        os.kill(int(pid), signal.SIGKILL)
                        found = True
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.002)


def _zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")


def _reap(proc: subprocess.Popen) -> tuple[int | None, float]:
    """(exit code, CPU seconds of the main process), closing its pipes."""
    cpu = 0.0
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    except ChildProcessError:
        pass
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None and not f.closed:
            f.close()
    return proc.returncode, cpu


def _parse_status(raw: bytearray, nonce: str, n_tests: int) -> dict:
    """The nonce-prefixed lines: S (isolation, JSON), T i 1 (a test passed), F (setup failed),
    C (runner pid), X (runner exit status); the rest is ignored."""
    out: dict = {"S": None, "F": None, "C": None, "X": None, "T": {}, "n_tests": n_tests}
    for line in raw.decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 3 or parts[0] != nonce or parts[1] not in ("S", "F", "C", "X", "T"):
            continue
        if parts[1] == "T":
            i, ok = parts[2].split()
            if 0 <= int(i) < n_tests:
                out["T"][int(i)] = int(ok == "1")
        elif parts[1] in ("C", "X"):
            out[parts[1]] = int(parts[2]) if parts[2].lstrip("-").isdigit() else None
        else:
            out[parts[1]] = parts[2]
    return out


def _result(bufs: dict, status: dict, killed: str | None, exit_code: int | None, cpu: float, wall: float,
            workdir: str) -> SandboxResult:
    per_test = tuple(status["T"].get(i, 0) for i in range(status["n_tests"]))
    out, err = (bufs[k].decode(errors="replace") for k in ("stdout", "stderr"))
    error = None
    if status["F"] is not None:
        error = f"sandbox setup failed ({workdir}): {status['F']}"
    elif status["S"] is None:
        tail = err.strip().splitlines()[-1:] if err.strip() else []
        error = (f"sandbox did not start (exit {exit_code}{', ' + killed if killed else ''})"
                 + (f": {tail[0][:300]}" if tail else ""))
    exit_code = status["X"] if status["X"] is not None else exit_code
    isolation = json.loads(status["S"]) if status["S"] else {}
    return SandboxResult(exit_code, out, err, killed, wall, cpu, sum(per_test), len(per_test), per_test,
                         isolation, error)


__all__ = ["SandboxLimits", "SandboxResult", "SandboxError", "run_python", "run_tests"]
