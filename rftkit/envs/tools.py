"""Tools: registered functions a model calls by name with JSON arguments, and their runner.

    @register_tool("calc", {"type": "object", "properties": {"expr": {"type": "string"}},
                            "required": ["expr"]}, timeout=2.0)
    def calc(expr: str) -> str: ...

A `Tool` is a name, a description (the function's docstring unless given), a JSON schema of
its arguments (an "object" schema with properties / required), a timeout in seconds, the
function, and its kind:

    "python"  the function returns the result text; it runs in a worker process
    "code"    the function returns a program; the program runs in the sandbox
              (rftkit/rewards/sandbox.py, all its limits; wall time = the tool's timeout)
              and its stdout is the result

`context` names parameters that the environment fills (e.g. the search tool's documents),
never the model; they stay out of the schema. At registration the schema must match the
function: every property is a keyword parameter, and every parameter without a default is
`required` (context ones aside); a mismatch is a ConfigError naming the tool and the argument.

`ToolRunner.run(calls, context)` returns one `ToolResult` per call and never raises: an
unknown tool, arguments that fail the schema (checked with `jsonschema`, `pip install
'rftkit[agent]'`), a tool that raises, times out or returns a non-string, each becomes a
result with that status and a message. Python tools run in `rftkit.rewards.pool.WorkerPool`
processes, so a tool past its timeout is SIGKILLed with its worker (a thread cannot stop a
call stuck in C, such as a huge integer power) and the pool starts another. Code tools run on
threads (their function only writes the program; each program is a sandboxed process that the
sandbox kills at its limits). The runner is
thread-safe (the episode loop steps environments on threads): a run borrows an idle pool or
starts one; pools start lazily (the first in ~1 s, later ones in ~10 ms) and are reused.
A worker gets the function by reference (module and name); a tool of a user file imported by
path (`imports:`) is loaded from that file in the worker.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.machinery import PathFinder
from typing import Any, Literal

from rftkit.envs.tool_calls import ToolCall
from rftkit.errors import ConfigError
from rftkit.registry import Registry
from rftkit.rewards.pool import ThreadCalls, WorkerPool
from rftkit.rewards.sandbox import SandboxLimits, run_python

ToolKind = Literal["python", "code"]
Status = Literal["ok", "error", "timeout", "invalid", "unknown"]
AGENT_EXTRA = "pip install 'rftkit[agent]'"


@dataclass(frozen=True, eq=False)
class Tool:
    """A registered tool (see the module docstring). Hashed by identity."""

    name: str
    description: str
    schema: Mapping[str, Any]
    timeout: float
    fn: Callable[..., Any]
    kind: ToolKind = "python"
    context: tuple[str, ...] = ()

    @property
    def main_arg(self) -> str | None:
        """The argument a tag-syntax body fills: the first required one, else the first property."""
        required = list(self.schema.get("required", []))
        props = list(self.schema.get("properties", {}))
        return (required or props or [None])[0]

    def spec(self) -> dict[str, Any]:
        """The tool as chat templates take it (`tools=[...]` of apply_chat_template)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": dict(self.schema)}}


TOOLS: Registry[Tool] = Registry("tool")


def register_tool(name: str, schema: Mapping[str, Any], timeout: float = 5.0, *, kind: ToolKind = "python",
                  description: str = "", context: Sequence[str] = ()) -> Callable:
    """Decorator: check `schema` against the function and register it in TOOLS as `name`."""

    def deco(fn: Callable) -> Callable:
        if kind not in ("python", "code"):
            raise ConfigError(f"tool '{name}': kind must be 'python' or 'code', got {kind!r}")
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigError(f"tool '{name}': timeout must be a positive number of seconds, got {timeout!r}")
        check_tool_schema(name, schema, fn, tuple(context))
        doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        TOOLS.register(name)(Tool(name, doc, dict(schema), float(timeout), fn, kind, tuple(context)))
        return fn

    return deco


def check_tool_schema(name: str, schema: Any, fn: Callable, context: tuple[str, ...] = ()) -> None:
    """The schema is an object schema whose properties are `fn`'s keyword parameters and whose
    `required` holds every parameter without a default (context parameters aside)."""
    where = f"tool '{name}'"
    props = schema.get("properties", {}) if isinstance(schema, Mapping) else None
    if not isinstance(schema, Mapping) or schema.get("type") != "object" or not isinstance(props, Mapping):
        raise ConfigError(f"{where}: the arguments schema must be {{'type': 'object', 'properties': {{...}}, "
                          f"'required': [...]}}, got {schema!r}")
    required = list(schema.get("required", []))
    sig = inspect.signature(fn)
    params = sig.parameters
    shown = f"{getattr(fn, '__qualname__', fn)}{sig}"
    if any(p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL) for p in params.values()):
        raise ConfigError(f"{where}: arguments are passed by keyword; {shown} has positional-only parameters")
    for arg in required:
        if arg not in props:
            raise ConfigError(f"{where}: required argument '{arg}' is not in the schema's properties")
    for arg in context:
        if arg not in params or arg in props:
            raise ConfigError(f"{where}: context argument '{arg}' must be a parameter of {shown} and not in the schema")
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for arg in props:
        if arg not in params and not takes_any:
            raise ConfigError(f"{where}: schema argument '{arg}' is not a parameter of {shown}")
    for p in params.values():
        if p.kind is p.VAR_KEYWORD or p.name in context or p.default is not p.empty or p.name in required:
            continue
        missing = "'required'" + ("" if p.name in props else " and 'properties'")
        raise ConfigError(f"{where}: parameter '{p.name}' of {shown} has no default, so the schema must list it "
                          f"in {missing}")
    try:
        import jsonschema
    except ImportError:  # checked again (with the install hint) when a call is validated
        return
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ConfigError(f"{where}: invalid JSON schema: {e.message}") from None


def _jsonschema():
    try:
        import jsonschema
    except ImportError:
        raise ConfigError(f"tool calls are validated with the jsonschema library: {AGENT_EXTRA}") from None
    return jsonschema


def require_agent_extra(*modules: str) -> None:
    """A ConfigError with the install hint unless each of `modules` imports (default: both
    libraries of the `agent` extra, jsonschema and rank_bm25)."""
    for name in modules or ("jsonschema", "rank_bm25"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(f"the tool environments need the {name} library: {AGENT_EXTRA}") from None


@functools.lru_cache(maxsize=512)
def _validator(tool: Tool):
    js = _jsonschema()
    return js.validators.validator_for(tool.schema)(tool.schema)


def validate_arguments(tool: Tool, arguments: Mapping[str, Any]) -> str | None:
    """Why `arguments` do not fit the tool's schema (jsonschema's best error, or an argument the
    schema does not have), or None when they do."""
    extra = [k for k in arguments if k not in tool.schema.get("properties", {})]
    if extra:
        return f"invalid arguments for {tool.name}: unexpected argument '{extra[0]}'"
    err = _jsonschema().exceptions.best_match(_validator(tool).iter_errors(dict(arguments)))
    if err is None:
        return None
    at = "/".join(str(p) for p in err.absolute_path)
    return f"invalid arguments for {tool.name}: {err.message}" + (f" (at '{at}')" if at else "")


@dataclass(frozen=True)
class ToolResult:
    """status: "ok" (text = the tool's output), "error" (raised, failed, or returned a
    non-string), "timeout", "invalid" (arguments against the schema) or "unknown" (no such
    tool); text: the output or the message."""

    status: Status
    text: str


def _invoke(fn: Callable, kwargs: dict[str, Any]) -> Any:
    """Runs in a worker: the call with keyword arguments (a module-level function, so it pickles)."""
    return fn(**kwargs)


@dataclass(frozen=True)
class _FileFn:
    """A tool of a user file imported by path (`imports:`), whose module a worker cannot import
    by name: the worker loads the file under the same module name, once, then calls."""

    path: str
    module: str
    qualname: str

    def __call__(self, **kwargs: Any) -> Any:
        mod = sys.modules.get(self.module)
        if mod is None:
            spec = importlib.util.spec_from_file_location(self.module, self.path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[self.module] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                del sys.modules[self.module]
                raise
        fn: Any = mod
        for part in self.qualname.split("."):
            fn = getattr(fn, part)
        return fn(**kwargs)


@functools.lru_cache(maxsize=512)
def _portable(tool: Tool) -> Callable:
    """The tool's function as a worker can unpickle it: itself when its module imports by name."""
    name = getattr(tool.fn, "__module__", "") or ""
    file = getattr(sys.modules.get(name), "__file__", None)
    if not file or "." in name or name == "__main__" or PathFinder.find_spec(name) is not None:
        return tool.fn
    return _FileFn(file, name, tool.fn.__qualname__)


def _run_program(tool: Tool, kwargs: dict[str, Any], limits: SandboxLimits) -> ToolResult:
    """A code tool on a thread: its program in the sandbox; stdout, or why it failed."""
    program = tool.fn(**kwargs)
    if not isinstance(program, str):
        return ToolResult("error", f"{tool.name} returned {type(program).__name__}, expected a program (str)")
    res = run_python(program, replace(limits, wall_time=tool.timeout, cpu_time=min(limits.cpu_time, tool.timeout)))
    if res.error:
        return ToolResult("error", f"sandbox error: {res.error}")
    if res.killed == "wall_time" or (not res.ok and res.summary() == "killed: cpu_time"):
        return ToolResult("timeout", f"{tool.name}: the program ran past {tool.timeout:g}s (killed)")
    if not res.ok:
        return ToolResult("error", res.summary())
    return ToolResult("ok", res.stdout)


@dataclass
class ToolRunner:
    """Runs tool calls (see the module docstring). workers: processes per pool (calls of one
    run go to one pool); memory_mb: each worker's data-segment cap; max_chars: results are cut
    to this; sandbox: limits of code tools (wall and CPU time come from the tool's timeout)."""

    workers: int = 2
    memory_mb: int = 4096
    max_chars: int = 4000
    sandbox: SandboxLimits = field(default_factory=lambda: SandboxLimits(memory_mb=512, output_bytes=1 << 16))
    _idle: list[WorkerPool] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, calls: Sequence[ToolCall], context: Mapping[str, Any] | None = None,
            tools: Registry[Tool] = TOOLS) -> list[ToolResult]:
        """One result per call, in order; `context` fills each tool's context parameters."""
        results: dict[int, ToolResult] = {}
        jobs: dict[int, tuple[Tool, dict[str, Any]]] = {}
        for i, call in enumerate(calls):
            if call.name not in tools:
                results[i] = ToolResult("unknown", f"unknown tool '{call.name}'; tools: {', '.join(tools.names())}")
                continue
            tool = tools.get(call.name)
            why = validate_arguments(tool, call.arguments)
            if why is not None:
                results[i] = ToolResult("invalid", why)
                continue
            jobs[i] = (tool, {**call.arguments, **{k: v for k, v in (context or {}).items() if k in tool.context}})
        py = {i: j for i, j in jobs.items() if j[0].kind == "python"}
        code = {i: j for i, j in jobs.items() if j[0].kind == "code"}
        if py:
            results.update(self._run_python(py))
        if code:
            results.update(self._run_code(code))
        return [results[i] for i in range(len(calls))]

    def _run_python(self, jobs: dict[int, tuple[Tool, dict[str, Any]]]) -> dict[int, ToolResult]:
        try:
            pool = self._borrow()
        except Exception as e:  # noqa: BLE001 - no process could start: every call is an error
            return {i: ToolResult("error", f"tool workers cannot start: {type(e).__name__}: {e}") for i in jobs}
        out: dict[int, ToolResult] = {}
        try:
            for timeout in sorted({t.timeout for t, _ in jobs.values()}):
                group = {i: j for i, j in jobs.items() if j[0].timeout == timeout}
                done = pool.map([(i, _invoke, (_portable(t), kw)) for i, (t, kw) in group.items()], timeout)
                out.update({i: self._result(group[i][0], *done[i]) for i in group})
        except Exception as e:  # noqa: BLE001 - the pool broke (not a tool): drop it, the calls are errors
            pool.close()
            return {**{i: ToolResult("error", f"tool workers failed: {type(e).__name__}: {e}") for i in jobs}, **out}
        with self._lock:
            self._idle.append(pool)
        return out

    def _run_code(self, jobs: dict[int, tuple[Tool, dict[str, Any]]]) -> dict[int, ToolResult]:
        # each program is its own sandboxed process that kills itself at its wall time; the
        # thread's deadline is only a backstop
        limit = max(t.timeout for t, _ in jobs.values()) + 10.0
        calls = [(i, _run_program, (t, kw, self.sandbox)) for i, (t, kw) in jobs.items()]
        done = ThreadCalls(calls, workers=len(calls), timeout=limit).results()
        out = {}
        for i, (tool, _) in jobs.items():
            status, value = done[i]
            res = value if status == "ok" else self._result(tool, status, value)
            out[i] = ToolResult(res.status, res.text[: self.max_chars])
        return out

    def _result(self, tool: Tool, status: str, value: Any) -> ToolResult:
        if status == "timeout":
            return ToolResult("timeout", f"{tool.name}: no answer after {tool.timeout:g}s (killed)")
        if status != "ok":
            return ToolResult("error", str(value)[: self.max_chars])
        if not isinstance(value, str):
            return ToolResult("error", f"{tool.name} returned {type(value).__name__}, expected str")
        return ToolResult("ok", value[: self.max_chars])

    def _borrow(self) -> WorkerPool:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return WorkerPool(self.workers, memory_mb=self.memory_mb)

    def close(self) -> None:
        """Stop the idle pools' workers (a later run starts new ones)."""
        with self._lock:
            pools, self._idle = self._idle, []
        for pool in pools:
            pool.close()


_SHARED: ToolRunner | None = None
_SHARED_LOCK = threading.Lock()


def shared_runner() -> ToolRunner:
    """The process-wide runner the tool environments use (created on first use)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = ToolRunner()
        return _SHARED


__all__ = ["Tool", "TOOLS", "ToolResult", "ToolRunner", "register_tool", "check_tool_schema", "validate_arguments",
           "require_agent_extra", "shared_runner"]
