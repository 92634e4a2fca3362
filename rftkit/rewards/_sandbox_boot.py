"""Bootstrap of the code sandbox: the first code of the sandboxed interpreter.

Started by `rftkit.rewards.sandbox` as `python -I -B _sandbox_boot.py` in a new session with a
clean environment; a standalone script (stdlib only). Two processes (docs/rewards.md section 4):

    supervisor (this process, never runs untrusted code): reads the job (a JSON line on stdin,
        which stays open as the parent's "stop now" channel); as root: new network + mount
        namespaces, / read-only, hidden ancestors of the interpreter and of the work dir (/root,
        a 0700 TMPDIR) replaced by a tmpfs holding only those folders, a tmpfs work dir, /proc
        with hidepid=2; not root: a user + network namespace if allowed. A child subreaper, not
        dumpable: forks the runner, waits for it (or stdin EOF), then SIGKILLs its process group
        and every other descendant (setsid daemons are re-parented here), reaps them and reports
        "<nonce> X <exit status>"
    runner (the child, own process group): as root setgroups([]) + setgid/setuid(sandbox uid);
        no_new_privs; Landlock (writes only in the work dir, no execve unless allowed); rlimits
        (hard = soft); the audit hook; then the program and its tests (see _plan)

A failure before the program starts is "<nonce> F <message>": a sandbox error, not a score.
The audit hook is defence in depth; the kernel layers are the barrier.
"""

import collections
import contextlib
import io
import json
import operator
import os
import resource
import select
import signal
import sys
import time
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = -100, 0x8000, 1, 442
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 36, 38
LANDLOCK_CREATE, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT = 444, 445, 446  # one number on every arch
LL_EXECUTE, LL_REFER, LL_TRUNCATE = 1, 1 << 13, 1 << 14  # REFER from ABI 2, TRUNCATE from ABI 3
LL_WRITE = sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write_file, remove_*, make_*
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
DIR_FLAGS = os.O_DIRECTORY | getattr(os, "O_PATH", 0)
FD_EVENTS = {"os.chmod", "os.chown", "os.utime", "os.truncate", "os.setxattr", "os.removexattr"}
PATH_EVENTS = FD_EVENTS | {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
                           "shutil.rmtree", "shutil.move", "shutil.copyfile"}
PROCESS_EVENTS = {"os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                  "subprocess.Popen", "pty.spawn", "os.startfile"}
# gc.get_*: the only Python-level way to reach the test chains of _plan
ALWAYS_BLOCKED = {"os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym",
                  "ctypes.call_function", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                  "sqlite3.enable_load_extension", "sqlite3.load_extension"}
NETWORK_EVENTS = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"}
# without a kernel file-system layer: ATTACH / VACUUM INTO write anywhere, symlinks race the checks
HOOK_ONLY_BLOCKED = {"sqlite3.connect", "os.symlink"}


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _mount(libc, src, target, fstype, flags, data) -> None:
    def enc(s):
        return s.encode() if isinstance(s, str) else s

    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(_libc()[0].get_errno(), f"mount {target}")


def _setattr(ctypes, libc, path: str, recursive: bool, set_: int, clr: int) -> None:
    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(set_, clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        raise OSError(ctypes.get_errno(), f"mount_setattr {path}")


def _hidden_ancestor(path: str) -> str | None:
    """Topmost ancestor of `path` that others cannot traverse (e.g. /root), or None."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        p = "/" + "/".join(parts[:i])
        if os.path.isdir(p) and not os.stat(p).st_mode & 0o001:
            return p
    return None


def _expose(libc, workdir: str) -> None:
    """Replace hidden ancestors of the interpreter's folders and of the work dir (e.g. /root, a
    0700 TMPDIR) by a tmpfs holding only those folders, so that the sandbox uid can reach them."""
    needed = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable), workdir)}
    needed |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    by_top: dict[str, list[str]] = {}
    for p in needed:
        top = _hidden_ancestor(p)
        if top is not None:
            by_top.setdefault(top, []).append(p)
    for top, paths in by_top.items():
        paths = [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]
        fds = [(p, os.open(p, os.O_PATH)) for p in paths]  # keep a handle before hiding them
        _mount(libc, "tmpfs", top, "tmpfs", 0, "mode=755,size=1m")
        os.umask(0o022)  # the folders leading to them must be traversable
        for p, fd in fds:
            os.makedirs(p, mode=0o755, exist_ok=True)
            _mount(libc, f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC, None)
            os.close(fd)


def _isolate_root(job: dict, status: dict) -> None:
    ctypes, libc = _libc()
    if libc.unshare(CLONE_NEWNS | (0 if job["allow_network"] else CLONE_NEWNET)) != 0:
        return
    status["netns"] = not job["allow_network"]
    wd, uid = job["workdir"], job["uid"]
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None)
    _expose(libc, wd)
    _mount(libc, "tmpfs", wd, "tmpfs", 0, f"mode=700,uid={uid},gid={uid},size={job['limits']['disk_mb']}m")
    with contextlib.suppress(OSError):
        _mount(libc, "proc", "/proc", "proc", 0, "hidepid=2")
        status["proc_hidden"] = True
    _setattr(ctypes, libc, "/", True, MOUNT_ATTR_RDONLY, 0)
    _setattr(ctypes, libc, wd, False, 0, MOUNT_ATTR_RDONLY)
    status["readonly_root"] = True


def _landlock(workdir: str, allow_exec: bool) -> int:
    """Kernel-enforced (Landlock, Linux >= 5.13, also unprivileged): file writes only beneath
    the work dir, no execve anywhere unless allowed. Returns the ABI version, 0 where absent."""
    try:
        ctypes, libc = _libc()
        abi = libc.syscall(LANDLOCK_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
        write = LL_WRITE | (LL_REFER if abi >= 2 else 0) | (LL_TRUNCATE if abi >= 3 else 0)
        handled = (ctypes.c_uint64 * 1)(write | (0 if allow_exec else LL_EXECUTE))
        ruleset = libc.syscall(LANDLOCK_CREATE, handled, 8, 0) if abi >= 1 else -1
        if ruleset < 0:
            return 0

        class PathBeneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

        fd = os.open(workdir, os.O_PATH)
        try:
            rule = PathBeneath(write, fd)
            ok = (libc.syscall(LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0) == 0
                  and libc.syscall(LANDLOCK_RESTRICT, ruleset, 0) == 0)
        finally:
            os.close(fd)
            os.close(ruleset)
        return abi if ok else 0
    except OSError:
        return 0


def _inside(path, root: str) -> bool:
    if isinstance(path, int):  # an open descriptor: the file it refers to (pipes and sockets pass)
        try:
            path = os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return True
        if not path.startswith("/"):
            return True
    p = os.path.realpath(os.fsdecode(os.fspath(path)))
    return p + os.sep == root or p.startswith(root)


def _open_refused(path, mode, flags, root: str, kernel_fs: bool) -> bool:
    """An open the hook refuses: a write outside the work dir, another process's /proc entry or
    any process's memory, and without a kernel layer any directory (a dir fd + dir_fd= would
    write where the path check cannot see)."""
    if isinstance(path, int):
        return False  # wraps a descriptor already open with its own access mode
    p = os.path.realpath(os.fsdecode(os.fspath(path)))
    parts = p.split("/")
    if len(parts) > 2 and parts[1] == "proc" and (parts[-1] == "mem" or
                                                  parts[2].isdigit() and parts[2] != str(os.getpid())):
        return True
    flags = flags if isinstance(flags, int) else 0
    writing = flags & WRITE_FLAGS or (mode and any(c in mode for c in "wax+"))
    if writing and not (p + os.sep == root or p.startswith(root)):
        return True
    return not kernel_fs and (flags & DIR_FLAGS or os.path.isdir(p))


def _disable_fork_exec() -> None:
    """_posixsubprocess.fork_exec forks and execs without any audit event; later imports of the
    module are refused by the hook, so this stub is what subprocess and multiprocessing get."""
    import _posixsubprocess

    def fork_exec(*args, **kwargs):
        raise PermissionError("sandbox: subprocess is not allowed")

    _posixsubprocess.fork_exec = fork_exec


def _install_guard(job: dict, kernel_fs: bool) -> None:
    root = os.path.realpath(job["workdir"]) + os.sep
    blocked = frozenset(ALWAYS_BLOCKED | (set() if job["allow_subprocess"] else PROCESS_EVENTS)
                        | (set() if job["allow_network"] else NETWORK_EVENTS)
                        | (set() if kernel_fs else HOOK_ONLY_BLOCKED))
    no_import = frozenset({"ctypes", "_ctypes"} | (set() if job["allow_subprocess"] else {"_posixsubprocess"}))
    if not job["allow_subprocess"]:
        _disable_fork_exec()

    def hook(event, args):
        if event in blocked:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            if _open_refused(*args, root, kernel_fs):
                raise PermissionError(f"sandbox: access to {args[0]!r} is not allowed")
        elif event in PATH_EVENTS:
            fd_arg = event in FD_EVENTS and isinstance(args[0], int)
            paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))] + ([args[0]] if fd_arg else [])
            if not all(_inside(a, root) for a in paths):
                raise PermissionError(f"sandbox: {event} outside the work dir is not allowed")
        elif event == "import" and args[0] in no_import:
            raise ImportError(f"sandbox: {args[0]} is not allowed")

    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]
    sys.addaudithook(hook)


def _report(fd: int, nonce: str, line: str) -> None:
    try:
        os.write(fd, f"{nonce} {line}\n".encode())
    except OSError:
        pass


def _children(me: int) -> list[int]:
    """Child pids of `me` (as a subreaper: also every orphaned descendant)."""
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:  # CONFIG_PROC_CHILDREN
            return [int(p) for p in f.read().split()]
    except OSError:
        return [int(p) for p in filter(str.isdigit, os.listdir("/proc")) if _ppid(p) == me]


def _ppid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _wait_runner(pid: int, ctl: int) -> None:
    """Until the runner exits (not reaped: its pid stays its group's) or the parent closes stdin."""
    try:
        fds, tick = [ctl, os.pidfd_open(pid)], None
    except (AttributeError, OSError):
        fds, tick = [ctl], 0.02
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if ctl in select.select(fds, [], [], tick)[0]:
            return


def _supervise(pid: int, ctl: int, fd: int, nonce: str) -> None:
    """Wait for the runner, then kill whatever the run left behind and report its exit status."""
    _report(fd, nonce, f"C {pid}")
    _wait_runner(pid, ctl)
    code, end = None, time.monotonic() + 2.0
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    while time.monotonic() < end:
        kids = _children(os.getpid())
        for k in kids:
            with contextlib.suppress(OSError):
                os.kill(k, signal.SIGKILL)
        while True:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                done = 0
            if not done:
                break
            code = os.waitstatus_to_exitcode(status) if done == pid else code
        if not kids:
            break
        time.sleep(0.001)
    _report(fd, nonce, f"X {code}")
    os._exit(0)


def _plan(job: dict, fd: int, nonce: str) -> list[tuple]:
    """The run as (callable, *args) steps for the module level. No harness frame is live while
    untrusted code runs (it could be read or its calls replaced): each test is a chain of C
    iterators registered with atexit, os.write(fd, "<nonce> T i 1") pulled by zip only after
    exec(test) returned, with the builtins of before the program (threat model: docs/rewards.md)."""
    import atexit
    import builtins

    sys.stdin = io.StringIO(job.get("stdin", ""))
    ns = {"__name__": "__main__", "__file__": os.path.join(job["workdir"], "main.py"), "__builtins__": builtins}
    tests = job.get("tests")
    try:
        steps = [(exec, compile(job["code"], ns["__file__"], "exec"), ns)]
        if tests is not None and job.get("setup"):
            steps.append((exec, compile(job["setup"], "<setup>", "exec"), ns))
    except (SyntaxError, ValueError):
        traceback.print_exc()
        return [(sys.exit, 1)]
    if tests is None:
        return steps
    atexit._clear()
    pristine = dict(vars(builtins))
    for i in reversed(range(len(tests))):  # atexit calls the last registered first
        try:
            code = compile(tests[i], f"<test {i}>", "exec")
        except (SyntaxError, ValueError):
            continue
        ran = zip(map(ns.__setitem__, ("__builtins__",), (dict(pristine),)), map(exec, (code,), (ns,)),
                  (f"{nonce} T {i} 1\n".encode(),))
        atexit.register(collections.deque, map(os.write, (fd,), map(operator.itemgetter(2), ran)), 0)
    return steps + [(atexit._run_exitfuncs,)]


def _runner(job: dict, status: dict, fd: int, nonce: str) -> list[tuple]:
    """In the forked runner, before any untrusted code: privileges, limits, guards; the plan."""
    os.setpgid(0, 0)
    wd, uid = job["workdir"], job["uid"]
    if uid is not None and os.geteuid() == 0 and (status["readonly_root"] or _hidden_ancestor(sys.base_prefix) is None):
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        status["uid"] = uid
    with contextlib.suppress(OSError):
        status["no_new_privs"] = _libc()[1].prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    try:
        os.chdir(wd)
    except OSError as e:
        msg = f"cannot enter the work dir {wd} ({e.strerror}); is TMPDIR reachable by the sandbox?"
        raise OSError(e.errno, msg) from e
    with open("main.py", "w") as f:
        f.write(job["code"])
    status["landlock"] = _landlock(wd, job["allow_subprocess"]) if job.get("landlock", True) else 0
    for name, soft, hard in job["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    _report(fd, nonce, "S " + json.dumps(status))
    _install_guard(job, status["readonly_root"] or status["landlock"] > 0)
    sys.path.insert(0, wd)
    return _plan(job, fd, nonce)


def main() -> tuple[list[tuple], bool]:
    buf = b""
    while not buf.endswith(b"\n"):  # read from fd 0 itself: no Python buffer keeps the nonce
        chunk = os.read(0, 1 << 16)
        buf += chunk
        if not chunk:
            break
    job = json.loads(buf)
    nonce, fd = job.pop("nonce"), job["status_fd"]
    ctl = os.dup(0)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    status = {"uid": None, "netns": False, "readonly_root": False, "proc_hidden": False, "landlock": 0}
    privileged = os.geteuid() == 0 and job["uid"] is not None
    try:
        if privileged:
            _isolate_root(job, status)
    except OSError as e:
        status["isolation_error"] = str(e)
    with contextlib.suppress(OSError):
        _, libc = _libc()
        if not privileged and not job["allow_network"]:
            status["netns"] = libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0  # if the kernel allows
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # the runner cannot open /proc/<this>/fd or mem
    pid = os.fork()
    if pid:
        _supervise(pid, ctl, fd, nonce)
    os.close(ctl)
    try:
        return _runner(job, status, fd, nonce), job.get("tests") is not None
    except BaseException as e:  # noqa: BLE001 - a setup failure is the sandbox's error, not a score
        _report(fd, nonce, f"F {type(e).__name__}: {e}")
        os._exit(1)


if __name__ == "__main__":
    _steps, _tests_mode = main()
    _exit_code = 1
    try:
        for _fn, *_args in _steps:
            _fn(*_args)
        _exit_code = 0
    except SystemExit as _e:  # exit() before the tests is a failure
        _exit_code = 1 if _tests_mode or not isinstance(_e.code, (int, type(None))) else (_e.code or 0)
    except BaseException:  # noqa: BLE001 - the program's own failure is the result
        traceback.print_exc()
    for _stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a program may have replaced or closed them
            _stream.flush()
    os._exit(_exit_code if 0 <= _exit_code < 256 else 1)
