"""The tool layer (rftkit/envs/tools.py, tool_calls.py): schema checks at registration,
argument validation, the call parsers, ToolRL's call correctness, the runner's containment of
raising / hanging / wrong-type tools, and the calculator's safety."""

import builtins
import sys
import time

import pytest

from rftkit.envs.tool_calls import Malformed, ToolCall, call_correctness, parse_calls
from rftkit.envs.tool_env import calc
from rftkit.envs.tools import TOOLS, ToolResult, ToolRunner, check_tool_schema, register_tool, validate_arguments
from rftkit.errors import ConfigError

X = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


@register_tool("t_double", X, timeout=5.0)
def t_double(x: int) -> str:
    """Twice x."""
    return str(2 * x)


@register_tool("t_raise", X, timeout=5.0)
def t_raise(x: int) -> str:
    raise RuntimeError(f"boom {x}")


@register_tool("t_sleep", X, timeout=0.5)
def t_sleep(x: int) -> str:
    time.sleep(30)
    return "late"


@register_tool("t_int", X, timeout=5.0)
def t_int(x: int) -> int:
    return x


@register_tool("t_ctx", X, timeout=5.0, context=("secret",))
def t_ctx(x: int, secret: str = "") -> str:
    return f"{x}{secret}"


@pytest.fixture(scope="module")
def runner():
    r = ToolRunner(workers=1)
    yield r
    r.close()


def test_schema_must_match_the_function():
    def f(expr: str, scale: int) -> str:
        return expr

    schema = {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}
    with pytest.raises(ConfigError, match="tool 't_bad'.*parameter 'scale'.*'required' and 'properties'"):
        register_tool("t_bad", schema)(f)
    assert "t_bad" not in TOOLS
    with pytest.raises(ConfigError, match="tool 't_bad': schema argument 'y' is not a parameter"):
        check_tool_schema("t_bad", {"type": "object", "properties": {"expr": {}, "y": {}, "scale": {}},
                                    "required": ["expr", "scale"]}, f)
    with pytest.raises(ConfigError, match="required argument 'z' is not in the schema's properties"):
        check_tool_schema("t_bad", {"type": "object", "properties": {"expr": {}}, "required": ["z"]}, f)
    with pytest.raises(ConfigError, match="must be \\{'type': 'object'"):
        check_tool_schema("t_bad", {"type": "string"}, f)
    with pytest.raises(ConfigError, match="invalid JSON schema"):
        check_tool_schema("t_bad", {"type": "object", "properties": {"expr": {"type": 3}, "scale": {}},
                                    "required": ["expr", "scale"]}, f)
    good = {"type": "object", "properties": {"expr": {}, "scale": {}}, "required": ["expr", "scale"]}
    check_tool_schema("t_ok", good, f)


def test_arguments_are_validated_against_the_schema():
    tool = TOOLS.get("t_double")
    assert validate_arguments(tool, {"x": 2}) is None
    assert "'a' is not of type 'integer'" in validate_arguments(tool, {"x": "a"})
    assert "'x' is a required property" in validate_arguments(tool, {})
    assert "unexpected argument 'y'" in validate_arguments(tool, {"x": 1, "y": 2})


def test_missing_jsonschema_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    with pytest.raises(ConfigError, match=r"pip install 'rftkit\[agent\]'"):
        validate_arguments(TOOLS.get("t_double"), {"x": 1})


def test_tag_syntax():
    parsed = parse_calls("ok <calc>12*3</calc> and <calc>1+1</calc>", {"calc": "expr"})
    assert parsed.syntax == "tag"
    assert parsed.items == (ToolCall("calc", {"expr": "12*3"}), ToolCall("calc", {"expr": "1+1"}))
    assert parse_calls("#56088", {"calc": "expr"}).items == ()
    assert parse_calls("<r>5</r>#5", {"calc": "expr"}).items == ()  # an observation is never a call
    assert parse_calls("<foo>1</foo>", {"calc": "expr"}).items == (ToolCall("foo", {}),)  # unknown tool
    assert parse_calls("3<4 and <x> alone", {"calc": "expr"}).items == ()  # unknown unclosed tag: text
    (bad,) = parse_calls("<calc>12*", {"calc": "expr"}).items
    assert isinstance(bad, Malformed) and bad.reason == "unclosed <calc>"


def test_json_syntax():
    text = ('<tool_call>\n{"name": "calc", "arguments": {"expr": "1+2"}}\n</tool_call>\n'
            '<tool_call>{"name": "search", "parameters": {"query": "a"}}</tool_call>')
    parsed = parse_calls(text, {"calc": "expr"})
    assert parsed.syntax == "json"
    assert parsed.items == (ToolCall("calc", {"expr": "1+2"}), ToolCall("search", {"query": "a"}))
    cases = {'<tool_call>{"name": "calc", "arguments": {"expr": </tool_call>': "invalid JSON",
             '<tool_call>{"arguments": {}}</tool_call>': 'no "name"',
             '<tool_call>{"name": "calc", "arguments": "1+2"}</tool_call>': '"arguments" is not an object',
             '<tool_call>[1]</tool_call>': "a call is a JSON object",
             '<tool_call>{"name": "calc", "arguments": {}}': "unclosed <tool_call>"}
    for text, reason in cases.items():
        (bad,) = parse_calls(text, {}).items
        assert isinstance(bad, Malformed) and reason in bad.reason, (text, bad)
    both = parse_calls('<tool_call>{"name": "calc", "arguments": {}}</tool_call><tool_call>{"name"', {})
    assert isinstance(both.items[0], ToolCall) and isinstance(both.items[1], Malformed)


def test_call_correctness_is_toolrl_rescaled():
    g = [{"name": "calc", "arguments": {"expr": "1+2"}}]
    assert call_correctness(g, g) == 1.0
    assert call_correctness(g, []) == 0.0
    assert call_correctness([], []) == 1.0  # no call was right, none was made
    assert call_correctness([], g) == 0.0
    # name J = 1, key J = 1, no value right: S = 2 of S_max = 1 + (1 + 1) = 3
    assert call_correctness(g, [{"name": "calc", "arguments": {"expr": "1+3"}}]) == pytest.approx(2 / 3)
    # an extra call: name J = 1/2, the best match is exact (1 + 1): (0.5 + 2) / 3
    extra = g + [{"name": "calc", "arguments": {"expr": "5"}}]
    assert call_correctness(g, extra) == pytest.approx(2.5 / 3)
    assert call_correctness(g, [{"name": "search", "arguments": {"expr": "1+2"}}]) == 0.0


def test_runner_contains_failures(runner):
    calls = [ToolCall("t_double", {"x": 4}), ToolCall("t_raise", {"x": 1}), ToolCall("t_int", {"x": 1}),
             ToolCall("nope", {}), ToolCall("t_double", {"x": "a"}), ToolCall("t_ctx", {"x": 1})]
    res = runner.run(calls, context={"secret": "s", "ignored": 1})
    assert [r.status for r in res] == ["ok", "error", "error", "unknown", "invalid", "ok"]
    assert res[0].text == "8" and res[5].text == "1s"
    assert "RuntimeError: boom 1" in res[1].text
    assert "returned int, expected str" in res[2].text
    assert "unknown tool 'nope'" in res[3].text


def test_runner_kills_a_hanging_tool_and_goes_on(runner):
    start = time.monotonic()
    slow, fast = runner.run([ToolCall("t_sleep", {"x": 1}), ToolCall("t_double", {"x": 2})])
    assert slow.status == "timeout" and "0.5s" in slow.text
    assert fast.status == "ok" and fast.text == "4"
    assert time.monotonic() - start < 10
    assert runner.run([ToolCall("t_double", {"x": 3})])[0].text == "6"  # the pool is reused


def test_calc_is_safe_and_exact(monkeypatch):
    def no_eval(*a, **k):
        raise AssertionError("calc must not eval")

    monkeypatch.setattr(builtins, "eval", no_eval)
    assert calc("1234*5678") == "7006652"
    assert calc("(2+3)*-4") == "-20"
    assert calc("7/2") == "3.5" and calc("1/3") == "0.333333" and calc("-2/3") == "-0.666667"
    assert calc("2**10") == "1024"
    start = time.monotonic()
    for expr in ("9**10**10", "2**-100000", "10**99*10**99"):
        with pytest.raises(ValueError, match="over 100 digits"):
            calc(expr)
    assert time.monotonic() - start < 1.0  # refused before computing
    for expr in ("__import__('os')", "().__class__", "1.5*2", "x+1", "[1]"):
        with pytest.raises(ValueError, match="only integers"):
            calc(expr)
    with pytest.raises(ValueError, match="division by zero"):
        calc("1/(2-2)")
    with pytest.raises(ValueError, match="could not parse"):
        calc("1+")


def test_a_tool_of_a_user_file_runs_in_the_workers(tmp_path, runner):
    """A file imported by path (as `imports:` does) is not importable by name in a worker."""
    import importlib.util

    path = tmp_path / "my_tools.py"
    path.write_text("from rftkit.envs.tools import register_tool\n\n"
                    "@register_tool('t_user', {'type': 'object', 'properties': {'s': {'type': 'string'}},\n"
                    "               'required': ['s']}, timeout=5.0)\n"
                    "def shout(s: str) -> str:\n    return s.upper()\n")
    spec = importlib.util.spec_from_file_location("rftkit_user_t_tools", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rftkit_user_t_tools"] = mod
    spec.loader.exec_module(mod)
    assert runner.run([ToolCall("t_user", {"s": "hi"})])[0] == ToolResult("ok", "HI")
