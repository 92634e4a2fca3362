"""Bootstrap of the code sandbox: runs as the first code of the sandboxed interpreter.

Started by `rftkit.rewards.sandbox` as `python -I -B _sandbox_boot.py` in a new session, with a
clean environment. It is a standalone script (stdlib only, nothing from rftkit) and runs
single-threaded, before any untrusted code, in this order:

    read the job (JSON on stdin: code, tests, limits, nonce); stdin becomes the job's stdin text
    as root: new network + mount namespaces; / made private then read-only (recursive);
             hidden ancestors of the interpreter (e.g. /root, mode 700) replaced by an empty
             tmpfs holding only the interpreter's folders; a size-capped tmpfs as the work dir;
             a fresh /proc with hidepid=2; then setgroups([]) + setgid/setuid(sandbox uid)
    not root: a user + network namespace if the kernel allows it, else nothing at this layer
    no_new_privs (setuid binaries cannot regain root); resource limits (hard = soft)
    audit hook: no sockets (unless allowed), no subprocess / fork / exec / kill / ctypes, no
             writes outside the work dir, no reading other processes' /proc entries
    run the program; in "tests" mode run each test after it and report "<nonce> T <i> <0|1>"

The audit hook is defence in depth (a determined program can still corrupt its own
interpreter); the kernel layers (namespaces, uid, rlimits, the parent's kill) are the barrier.
"""

import json
import os
import resource
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = -100, 0x8000, 1, 442
PR_SET_NO_NEW_PRIVS = 38
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
               "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
PROCESS_EVENTS = {"os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                  "subprocess.Popen", "pty.spawn", "os.startfile"}
ALWAYS_BLOCKED = {"os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym",
                  "ctypes.call_function"}
NETWORK_EVENTS = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"}


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _mount(libc, src, target, fstype, flags, data) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        import ctypes

        raise OSError(ctypes.get_errno(), f"mount {target}")


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


def _expose_interpreter(libc) -> None:
    """Replace hidden ancestors of the interpreter's folders by a tmpfs holding only those folders."""
    needed = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}
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
    _expose_interpreter(libc)
    _mount(libc, "tmpfs", wd, "tmpfs", 0, f"mode=700,uid={uid},gid={uid},size={job['limits']['disk_mb']}m")
    try:
        _mount(libc, "proc", "/proc", "proc", 0, "hidepid=2")
        status["proc_hidden"] = True
    except OSError:
        pass
    _setattr(ctypes, libc, "/", True, MOUNT_ATTR_RDONLY, 0)
    _setattr(ctypes, libc, wd, False, 0, MOUNT_ATTR_RDONLY)
    status["readonly_root"] = True


def _isolate_user(job: dict, status: dict) -> None:
    if job["allow_network"]:
        return
    try:
        _, libc = _libc()
        status["netns"] = libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
    except OSError:
        pass


def _drop_privileges(uid: int, status: dict) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    status["uid"] = uid


def _set_limits(lim: dict) -> None:
    cpu = max(1, int(-(-lim["cpu_time"] // 1)))
    for res, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                       (resource.RLIMIT_AS, (lim["memory_mb"] << 20,) * 2),
                       (resource.RLIMIT_FSIZE, (lim["file_size_mb"] << 20,) * 2),
                       (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
                       (resource.RLIMIT_CORE, (0, 0)),
                       (resource.RLIMIT_NPROC, (lim["nproc"],) * 2)):
        resource.setrlimit(res, value)


def _inside(path, root: str) -> bool:
    if isinstance(path, int):
        return True  # an already-open descriptor
    p = os.path.realpath(os.fsdecode(os.fspath(path)))
    return p + os.sep == root or p.startswith(root)


def _other_proc(path) -> bool:
    if isinstance(path, int):
        return False
    parts = os.path.realpath(os.fsdecode(os.fspath(path))).split("/")
    return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != str(os.getpid())


def _install_guard(workdir: str, allow_subprocess: bool, allow_network: bool) -> None:
    root = os.path.realpath(workdir) + os.sep
    blocked = set(ALWAYS_BLOCKED) | (set() if allow_subprocess else PROCESS_EVENTS)
    blocked |= set() if allow_network else NETWORK_EVENTS

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(flags, int) and flags & WRITE_FLAGS) or (mode and any(c in mode for c in "wax+"))
            if (writing and not _inside(path, root)) or _other_proc(path):
                raise PermissionError(f"sandbox: access to {path!r} is not allowed")
        elif event in PATH_EVENTS:
            if not all(_inside(a, root) for a in args if isinstance(a, (str, bytes, os.PathLike))):
                raise PermissionError(f"sandbox: {event} outside the work dir is not allowed")
        elif event == "import" and args[0] in ("ctypes", "_ctypes"):
            raise ImportError("sandbox: ctypes is not allowed")
        elif event in blocked:
            raise PermissionError(f"sandbox: {event} is not allowed")

    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]
    sys.addaudithook(hook)


def _report(fd: int, nonce: str, line: str) -> None:
    try:
        os.write(fd, f"{nonce} {line}\n".encode())
    except OSError:
        pass


def _run(job: dict, fd: int, nonce: str) -> int:
    """Execute the program (and the tests); returns the exit code."""
    import io

    sys.stdin = io.StringIO(job.get("stdin", ""))
    ns = {"__name__": "__main__", "__file__": os.path.join(job["workdir"], "main.py"), "__builtins__": __builtins__}
    tests = job.get("tests")
    try:
        exec(compile(job["code"], ns["__file__"], "exec"), ns)
        if tests is not None and job.get("setup"):
            exec(compile(job["setup"], "<setup>", "exec"), ns)
    except SystemExit as e:
        if tests is None:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        _report(fd, nonce, "E program called exit() before the tests")
        return 1
    except BaseException as e:  # noqa: BLE001 - the program's own failure is the result
        import traceback

        traceback.print_exc()
        _report(fd, nonce, f"E {type(e).__name__}")
        return 1
    for i, test in enumerate(tests or []):
        try:
            exec(compile(test, f"<test {i}>", "exec"), ns)
            ok = 1
        except BaseException:  # noqa: BLE001 - a failing test, whatever it raised
            ok = 0
        _report(fd, nonce, f"T {i} {ok}")
    return 0


def main() -> None:
    job = json.loads(sys.stdin.readline())
    nonce, fd = job.pop("nonce"), job["status_fd"]
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    status = {"uid": None, "netns": False, "readonly_root": False, "proc_hidden": False}
    if os.geteuid() == 0 and job.get("uid") is not None:
        try:
            _isolate_root(job, status)
        except OSError as e:
            status["isolation_error"] = str(e)
        if status["readonly_root"] or _hidden_ancestor(sys.base_prefix) is None:
            _drop_privileges(job["uid"], status)
    else:
        _isolate_user(job, status)
    try:
        _, libc = _libc()
        status["no_new_privs"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    except OSError:
        pass
    os.chdir(job["workdir"])
    with open("main.py", "w") as f:
        f.write(job["code"])
    _set_limits(job["limits"])
    _report(fd, nonce, "S " + json.dumps(status))
    _install_guard(job["workdir"], job["allow_subprocess"], job["allow_network"])
    sys.path.insert(0, job["workdir"])
    code = _run(job, fd, nonce)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


if __name__ == "__main__":
    main()
