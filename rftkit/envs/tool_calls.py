"""Reading the tool calls of a model turn, and scoring them against gold calls. Pure functions.

Two syntaxes, detected per turn (a turn that contains "<tool_call>" is JSON, else tags):

    tag (the built-in char model):  <calc>1234*5678</calc>
        the tag is the tool's name, the body the tool's single argument as raw text (its first
        required argument, `tag_args[name]`); a pair of tags whose name is no tool is an
        unknown call; the result tag "<r>...</r>" (observations) is never a call.
    JSON (Qwen2.5 / Hermes chat templates, several per turn):
        <tool_call>
        {"name": "calc", "arguments": {"expr": "1+2"}}
        </tool_call>

Each call becomes a `ToolCall`, or a `Malformed` with the reason (bad JSON, no name,
arguments not an object, an unclosed tag), in the order they appear. A turn without either
is the final answer (`ParsedTurn.items == ()`).

`call_correctness(gold, pred)` is ToolRL's correctness reward (Qian et al. 2025,
arXiv:2504.13958, its released `compute_tool_call_reward`) rescaled to [0, 1]; see there.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

RESULT_TAGS = frozenset({"r"})  # observations of the tag syntax: never read as calls
JSON_OPEN, JSON_CLOSE = "<tool_call>", "</tool_call>"
_OPEN_TAG = re.compile(r"<([a-z_][a-z0-9_]*)>")
_JSON_BLOCK = re.compile(re.escape(JSON_OPEN) + r"(.*?)" + re.escape(JSON_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """A call as the model wrote it: the tool's name and its arguments (not yet validated)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": dict(self.arguments)}


@dataclass(frozen=True)
class Malformed:
    """A call that could not be read: why, and the text of the attempt (cut to 200 chars)."""

    reason: str
    raw: str = ""


@dataclass(frozen=True)
class ParsedTurn:
    """syntax: "tag" or "json" (the syntax the turn used; "tag" when it has no call), and
    its calls in order."""

    syntax: Literal["tag", "json"]
    items: tuple[ToolCall | Malformed, ...]


def parse_calls(text: str, tag_args: Mapping[str, str | None]) -> ParsedTurn:
    """The calls of a turn. `tag_args`: tool name -> the argument a tag's body fills (None for
    a tool without arguments), for the tag syntax; every name in it is a known tool."""
    if JSON_OPEN in text:
        return ParsedTurn("json", tuple(parse_json_calls(text)))
    return ParsedTurn("tag", tuple(parse_tag_calls(text, tag_args)))


def parse_tag_calls(text: str, tag_args: Mapping[str, str | None]) -> list[ToolCall | Malformed]:
    """`<name>body</name>` pairs, left to right, not nested. An opening tag of a known tool
    without its closing tag is Malformed; one of an unknown name is plain text."""
    out: list[ToolCall | Malformed] = []
    pos = 0
    while (m := _OPEN_TAG.search(text, pos)) is not None:
        name = m.group(1)
        close = text.find(f"</{name}>", m.end())
        if close < 0:
            if name in tag_args:
                out.append(Malformed(f"unclosed <{name}>", text[m.start():][:200]))
            pos = m.end()
            continue
        body, pos = text[m.end():close], close + len(name) + 3
        if name in RESULT_TAGS:
            continue
        arg = tag_args.get(name)
        out.append(ToolCall(name, {arg: body} if arg is not None else {}))
    return out


def parse_json_calls(text: str) -> list[ToolCall | Malformed]:
    """Every `<tool_call>{json}</tool_call>` block; an opening tag left unclosed after the last
    block is Malformed. "parameters" is read as "arguments" (ToolRL's data uses it)."""
    out: list[ToolCall | Malformed] = []
    end = 0
    for m in _JSON_BLOCK.finditer(text):
        out.append(_json_call(m.group(1)))
        end = m.end()
    if JSON_OPEN in text[end:]:
        out.append(Malformed(f"unclosed {JSON_OPEN}", text[text.index(JSON_OPEN, end):][:200]))
    return out


def _json_call(body: str) -> ToolCall | Malformed:
    raw = body.strip()[:200]
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        return Malformed(f"invalid JSON: {getattr(e, 'msg', type(e).__name__)}", raw)
    if not isinstance(obj, dict):
        return Malformed(f"a call is a JSON object, got {type(obj).__name__}", raw)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return Malformed("the call has no \"name\"", raw)
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(args, dict):
        return Malformed(f"\"arguments\" is not an object ({type(args).__name__})", raw)
    return ToolCall(name, args)


def _match_score(a: Sequence[str], b: Sequence[str]) -> float:
    """Multiset Jaccard |a & b| / |a | b| (1 when equal, 0 when one is empty)."""
    if list(a) == list(b):
        return 1.0
    if not a or not b:
        return 0.0
    inter = sum((Counter(a) & Counter(b)).values())
    return inter / (len(a) + len(b) - inter)


def call_correctness(gold: Sequence[Mapping[str, Any]], pred: Sequence[Mapping[str, Any]]) -> float:
    """ToolRL's correctness of predicted calls against gold calls, in [0, 1].

    Calls are {"name", "arguments"}. As in ToolRL's released reward (rlla.py,
    compute_tool_call_reward):

        S     = J(gold names, pred names)                    (multiset Jaccard)
              + sum over gold calls g of the best unused pred call p with p.name == g.name:
                    J(keys of g.arguments, keys of p.arguments) + #{k : p.arguments[k] == g.arguments[k]}
        S_max = 1 + sum over gold calls (1 + |g.arguments|)
        score = S / S_max   (1 for an exact match)

    ToolRL's R_correct = (R_max - R_min) * score + R_min = 6 * score - 3 (R_max = 3, R_min = -3).
    """
    gold = [_norm(g) for g in gold]
    pred = [_norm(p) for p in pred]
    if gold == pred:
        return 1.0
    score = _match_score([g["name"] for g in gold], [p["name"] for p in pred])
    s_max, used = 1.0, set()
    for g in gold:
        s_max += 1.0 + len(g["arguments"])
        best, best_i = 0.0, -1
        for i, p in enumerate(pred):
            if i in used or p["name"] != g["name"]:
                continue
            s = _match_score(list(g["arguments"]), list(p["arguments"]))
            s += sum(1.0 for k, v in g["arguments"].items() if k in p["arguments"] and p["arguments"][k] == v)
            if s > best:
                best, best_i = s, i
        if best_i >= 0:
            used.add(best_i)
            score += best
    return score / s_max


def _norm(call: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": str(call.get("name", "")), "arguments": dict(call.get("arguments") or {})}


__all__ = ["ToolCall", "Malformed", "ParsedTurn", "parse_calls", "parse_tag_calls", "parse_json_calls",
           "call_correctness", "RESULT_TAGS"]
