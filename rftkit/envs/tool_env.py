"""Tool-call environments: the model's turns call tools until a turn calls none (the answer).

    turn "<calc>123*456</calc>"   -> calls run (ToolRunner)  -> observation "<r>56088</r>"
    turn "#56088"                 -> no call: done, the verifier scores this last turn

`ToolEnv.step(text)` parses the turn's calls (rftkit/envs/tool_calls.py: the built-in model's
tag syntax, or the chat templates' `<tool_call>` JSON), runs at most `max_calls_per_turn` of
them on the module's shared `ToolRunner` (worker processes, code tools in the sandbox), and
returns the results as the next observation:

    tag syntax   "<r>result</r>" per call, text cut to `max_result_chars`, lowercased and kept
                 to the built-in tokenizer's alphabet without "#", "<", ">" (so a result never
                 looks like an answer or a tag)
    JSON syntax  the results' plain text, one per line (a chat tokenizer wraps it as a tool turn)

A malformed call, an unknown tool, arguments that fail the schema, a tool error, a timeout,
or a call beyond `max_calls_per_turn` becomes an "error: ..." result in the observation and a
count in `info`, never an exception. `stop` holds the closing tags of the env's tools (e.g.
"</calc>"), so a built-in model's call turn ends there; chat models end turns with eos.

info per turn (the episode loop sums them): tool_calls (every call attempt), tool_malformed
(unreadable, or arguments against the schema), tool_unknown, tool_errors (raised, failed,
non-string result, over the per-turn cap), tool_timeouts; and, when the problem has
meta["gold_calls"] = [{"name", "arguments"}, ...], call_score: the change of ToolRL's
correctness of all calls so far against the gold calls (`call_correctness`, Qian et al. 2025,
arXiv:2504.13958, rescaled to [0, 1]), so the episode's sum is the score of its calls.

A tool environment of one's own (in a user file, like a task):

    @register_tool("weather", {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}, timeout=2.0)
    def weather(city: str) -> str: ...

    @ENVS.register("weather")
    class WeatherEnv(ToolEnv):
        tools = ("weather",)          # stop = ("</weather>",)

Built-in tools and environments (ENVS names = tool names):
    calc    calc(expr): integer arithmetic + - * / ** ( ), evaluated by walking `ast` (no eval),
            numbers capped at CALC_MAX_DIGITS digits (a huge power is refused before computing)
    python  python(code): the program runs in the sandbox; its stdout (stripped) is the result
    search  search(query): BM25 over the problem's documents (env args `docs`, `top_k`)
"""

from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction
from typing import Any, ClassVar

from rftkit.envs.base import ENVS, EnvBase, StepResult
from rftkit.envs.search_kb import search  # noqa: F401  (registers the "search" tool)
from rftkit.envs.tool_calls import Malformed, ParsedTurn, ToolCall, call_correctness, parse_calls
from rftkit.envs.tools import TOOLS, ToolResult, register_tool, require_agent_extra, shared_runner
from rftkit.model.tokenizer import ALPHABET
from rftkit.tasks.agent_tasks import tag_result
from rftkit.types import Problem

COUNTS = ("tool_calls", "tool_malformed", "tool_unknown", "tool_errors", "tool_timeouts")
_TAG_SAFE = frozenset(ALPHABET) - set("#<>")
_FAILURE = {"invalid": "tool_malformed", "unknown": "tool_unknown", "error": "tool_errors", "timeout": "tool_timeouts"}


class ToolEnv(EnvBase):
    """Knobs (env args): max_calls_per_turn (calls run per turn; more are errors),
    max_result_chars (a result's text is cut to this). Subclasses name their `tools`; `stop`
    defaults to their closing tags; `context()` fills the tools' context parameters."""

    tools: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ("jsonschema",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "stop" not in cls.__dict__:
            cls.stop = tuple(f"</{t}>" for t in cls.tools)

    def __init__(self, problem: Problem, *, max_calls_per_turn: int = 4, max_result_chars: int = 64) -> None:
        super().__init__(problem)
        require_agent_extra("jsonschema")
        if max_calls_per_turn < 1 or max_result_chars < 1:
            raise ValueError(f"max_calls_per_turn and max_result_chars must be >= 1, got {max_calls_per_turn}, "
                             f"{max_result_chars}")
        self.max_calls, self.max_chars = int(max_calls_per_turn), int(max_result_chars)
        self.tag_args = {t: TOOLS.get(t).main_arg for t in self.tools}
        self.gold = problem.meta.get("gold_calls")
        self.calls: list[dict[str, Any]] = []  # every readable call of the episode, for call_score
        self.scored = 0.0

    def context(self) -> dict[str, Any]:
        return {}

    def step(self, action: str) -> StepResult:
        parsed = parse_calls(action, self.tag_args)
        if not parsed.items:
            return StepResult(done=True, info=self._call_score())
        items = parsed.items[: self.max_calls]
        calls = [it for it in items if isinstance(it, ToolCall) and it.name in self.tools]
        results = iter(shared_runner().run(calls, self.context()) if calls else [])
        texts, info = [], dict.fromkeys(COUNTS, 0)
        for it in items:
            res = self._unrun(it) or next(results)
            if res.status == "ok":
                texts.append(res.text)
            else:
                texts.append(f"error: {res.text}")
                info[_FAILURE[res.status]] += 1
        for _ in parsed.items[self.max_calls:]:
            texts.append(f"error: at most {self.max_calls} calls per turn")
            info["tool_errors"] += 1
        info["tool_calls"] = len(parsed.items)
        self.calls += [it.as_dict() for it in parsed.items if isinstance(it, ToolCall)]
        return StepResult(self._observation(parsed, texts), info={**info, **self._call_score()})

    def _unrun(self, item: ToolCall | Malformed) -> ToolResult | None:
        """The result of a call that is not run: malformed, or a tool this env does not have."""
        if isinstance(item, Malformed):
            return ToolResult("invalid", f"malformed call: {item.reason}")
        if item.name not in self.tools:
            return ToolResult("unknown", f"unknown tool {item.name}; tools: {', '.join(self.tools)}")
        return None

    def _observation(self, parsed: ParsedTurn, texts: list[str]) -> str:
        if parsed.syntax == "json":
            return "\n".join(t.strip()[: self.max_chars] for t in texts)
        return "".join(tag_result(tag_safe(t)[: self.max_chars]) for t in texts)

    def _call_score(self) -> dict[str, float]:
        if self.gold is None:
            return {}
        total = call_correctness(self.gold, self.calls)
        delta, self.scored = total - self.scored, total
        return {"call_score": delta}

    @classmethod
    def tool_specs(cls) -> list[dict[str, Any]]:
        """The env's tools for a chat template (`apply_chat_template(..., tools=...)`)."""
        return [TOOLS.get(t).spec() for t in cls.tools]


def tag_safe(text: str) -> str:
    """Text the built-in model can read: lowercase, whitespace runs as one space (newlines
    kept), only its alphabet without '#', '<', '>' (other characters dropped)."""
    lines = (" ".join(line.split()) for line in text.strip().lower().splitlines())
    return "".join(ch for ch in "\n".join(lines) if ch in _TAG_SAFE)


CALC_MAX_DIGITS = 100  # numerator and denominator of every intermediate value
CALC_MAX_CHARS = 200
_MAX_BITS = math.ceil(CALC_MAX_DIGITS * math.log2(10))


def _check(x: Fraction) -> Fraction:
    if max(x.numerator.bit_length(), x.denominator.bit_length()) > _MAX_BITS:
        raise ValueError(f"result over {CALC_MAX_DIGITS} digits")
    return x


def _div(a: Fraction, b: Fraction) -> Fraction:
    if b == 0:
        raise ValueError("division by zero")
    return a / b


def _pow(a: Fraction, b: Fraction) -> Fraction:
    """Refused before computing when the result would be too large (bits of the base times
    the exponent): 9**10**9 must not hold the worker for minutes."""
    if b.denominator != 1:
        raise ValueError("the exponent must be an integer")
    if a == 0 and b < 0:
        raise ValueError("division by zero")
    if abs(a) not in (0, 1) and max(a.numerator.bit_length(), a.denominator.bit_length()) * abs(b.numerator) > \
            _MAX_BITS + 64:
        raise ValueError(f"result over {CALC_MAX_DIGITS} digits")
    return a ** int(b)


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: _div, ast.Pow: _pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return _check(Fraction(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _check(_BINOPS[type(node.op)](_eval(node.left), _eval(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ValueError("only integers, + - * / ** and parentheses")


def format_number(x: Fraction) -> str:
    """An integer as is; otherwise a decimal rounded to 6 places, trailing zeros dropped."""
    if x.denominator == 1:
        return str(x.numerator)
    q = round(abs(x) * 10**6)
    text = f"{q // 10**6}.{q % 10**6:06d}".rstrip("0").rstrip(".")
    return ("-" if x < 0 and q else "") + text


@register_tool("calc", {"type": "object", "required": ["expr"],
                        "properties": {"expr": {"type": "string", "description": "e.g. 1234*5678"}}}, timeout=2.0)
def calc(expr: str) -> str:
    """Calculator: integer arithmetic with + - * / ** and parentheses, e.g. 1234*5678."""
    if len(expr) > CALC_MAX_CHARS:
        raise ValueError(f"expression longer than {CALC_MAX_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise ValueError("could not parse the expression") from None
    return format_number(_eval(tree.body))


@register_tool("python", {"type": "object", "required": ["code"],
                          "properties": {"code": {"type": "string", "description": "a program that prints"}}},
               timeout=5.0, kind="code")
def python(code: str) -> str:
    """Python interpreter: runs the program in a sandbox; the result is what it prints."""
    return code


@ENVS.register("calc")
class CalcEnv(ToolEnv):
    """The calculator environment: tool `calc` (agent_calc)."""

    tools = ("calc",)


@ENVS.register("python")
class PythonEnv(ToolEnv):
    """The code-interpreter environment: tool `python`, programs in the sandbox (agent_python)."""

    tools = ("python",)


@ENVS.register("search")
class SearchEnv(ToolEnv):
    """The search environment: tool `search` over `docs` (the problem's knowledge base, from its
    env args), returning the `top_k` best documents (agent_search)."""

    tools = ("search",)
    requires = ("jsonschema", "rank_bm25")

    def __init__(self, problem: Problem, *, docs: list[str] | tuple[str, ...] = (), top_k: int = 1,
                 max_calls_per_turn: int = 4, max_result_chars: int = 64) -> None:
        super().__init__(problem, max_calls_per_turn=max_calls_per_turn, max_result_chars=max_result_chars)
        require_agent_extra("rank_bm25")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.docs, self.top_k = [str(d) for d in docs], int(top_k)

    def context(self) -> dict[str, Any]:
        return {"docs": self.docs, "k": self.top_k}


__all__ = ["ToolEnv", "CalcEnv", "PythonEnv", "SearchEnv", "calc", "python", "tag_safe", "format_number",
           "COUNTS", "CALC_MAX_DIGITS"]
