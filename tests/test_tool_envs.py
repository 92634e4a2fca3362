"""Tool environments (rftkit/envs/tool_env.py) and the tool-using tasks (rftkit/tasks/agent_tasks.py):
failures become observations and counts, code runs in the sandbox, BM25 finds the right
document, and every task's demonstration is exactly what its environment produces."""

import random
import sys
import time

import pytest

from rftkit.envs.base import ENVS, make_env
from rftkit.envs.search_kb import rank, search
from rftkit.envs.tool_env import CalcEnv, PythonEnv, SearchEnv, ToolEnv
from rftkit.envs.tools import register_tool
from rftkit.model.tokenizer import ALPHABET
from rftkit.tasks.agent_tasks import AgentCalc, AgentPython, AgentSearch
from rftkit.tasks.base import TASKS, verify
from rftkit.types import Problem

X = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
CODE = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}


@register_tool("te_raise", X, timeout=5.0)
def te_raise(x: int) -> str:
    raise RuntimeError("boom")


@register_tool("te_sleep", X, timeout=0.5)
def te_sleep(x: int) -> str:
    time.sleep(30)
    return "late"


@register_tool("te_code", CODE, timeout=1.0, kind="code")
def te_code(code: str) -> str:
    return code


@ENVS.register("t_tools")
class ManyTools(ToolEnv):
    tools = ("calc", "te_raise", "te_sleep", "te_code")


def P(env: str = "t_tools", **meta) -> Problem:
    return Problem("t", "q=", "1", "exact", meta=meta, env=env)


def J(name: str, args: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


def test_stops_are_the_closing_tags():
    assert CalcEnv.stop == ("</calc>",) and PythonEnv.stop == ("</python>",) and SearchEnv.stop == ("</search>",)
    assert ManyTools.stop == ("</calc>", "</te_raise>", "</te_sleep>", "</te_code>")
    assert [s["function"]["name"] for s in CalcEnv.tool_specs()] == ["calc"]


def test_failures_are_observations_and_counts():
    env = ManyTools(P(), max_calls_per_turn=8)
    turn = (J("calc", '{"expr": "2*3"}') + J("te_raise", '{"x": 1}') + J("te_sleep", '{"x": 1}')
            + J("nope", "{}") + J("calc", '{"expr": 5}') + '<tool_call>{"name": </tool_call>')
    res = env.step(turn)
    assert not res.done
    assert res.info == {"tool_calls": 6, "tool_malformed": 2, "tool_unknown": 1, "tool_errors": 1,
                        "tool_timeouts": 1}
    lines = res.observation.split("\n")
    assert lines[0] == "6"  # JSON syntax: the plain result text
    assert "RuntimeError: boom" in lines[1] and "no answer after 0.5s" in lines[2]
    assert "unknown tool nope" in lines[3] and "invalid arguments for calc" in lines[4]
    assert "malformed call: invalid JSON" in lines[5]
    assert env.step("#6").done


def test_tag_observations_and_the_per_turn_cap():
    env = ManyTools(P(), max_calls_per_turn=2)
    res = env.step("<calc>2**3</calc><calc>1/0</calc><calc>1+1</calc>")
    assert res.observation == "<r>8</r><r>error: valueerror: division by zero</r><r>error: at most 2 calls per turn</r>"
    assert res.info["tool_calls"] == 3 and res.info["tool_errors"] == 2
    unknown = env.step("<foo>1</foo>")
    assert unknown.info["tool_unknown"] == 1 and "unknown tool foo" in unknown.observation
    assert env.step("<calc>1+").info["tool_malformed"] == 1  # unclosed tag (the turn ended by eos)
    for obs in (res.observation, unknown.observation):
        assert "#" not in obs and set(obs) <= set(ALPHABET)


def test_python_tool_runs_in_the_sandbox():
    env = PythonEnv(P("python"))
    assert env.step("<python>print(sum(range(38)))</python>").observation == "<r>703</r>"
    net = env.step("<python>import socket\nsocket.socket()</python>")  # no network in the sandbox
    assert net.info["tool_errors"] == 1 and net.observation.startswith("<r>error: exit 1")
    hang = ManyTools(P()).step("<te_code>while True:\n    pass</te_code>")
    assert hang.info["tool_timeouts"] == 1


def test_search_ranks_with_bm25():
    docs = ["ann lives in rome", "bob lives in oslo", "peru has rome", "chad has oslo", "cal lives in lima",
            "peru has lima"]
    assert search("ann", docs=docs) == "ann lives in rome"
    assert search("rome", docs=docs) == "peru has rome"  # the shorter document first
    assert search("where is bob", docs=docs, k=2) == "bob lives in oslo"  # only documents sharing a word
    assert search("zzz", docs=docs) == "no results"
    env = SearchEnv(P("search"), docs=docs)
    assert env.step("<search>oslo</search>").observation == "<r>chad has oslo</r>"
    task = AgentSearch()
    for seed in range(300):  # the demo's documents are the top hits of every generated knowledge base
        p = task.sample(random.Random(seed), random.Random(seed).randint(3, 12))
        (_, q1), (_, q2) = [(c["name"], c["arguments"]["query"]) for c in p.meta["gold_calls"]]
        d = p.meta["env_args"]["docs"]
        assert [d[i] for i in rank(q1, d, 1) + rank(q2, d, 1)] == [p.meta["demo_segments"][1][0][3:-4],
                                                                  p.meta["demo_segments"][3][0][3:-4]]


def _replay(p: Problem) -> float:
    """Step the env with the demo's trained segments; each observation must be the next
    untrained segment, the last turn done and correct. Returns the summed call_score."""
    segs = p.meta["demo_segments"]
    assert "".join(s for s, _ in segs) == p.demo and segs[-1][1]
    env, score = make_env(p), 0.0
    assert env.reset() is None
    for i, (text, trained) in enumerate(segs):
        if not trained:
            continue
        res = env.step(text)
        score += res.info.get("call_score", 0.0)
        if i == len(segs) - 1:
            assert res.done and res.observation == ""
        else:
            assert not res.done and res.observation == segs[i + 1][0] and not segs[i + 1][1]
    assert verify(p, segs[-1][0]).correct
    assert set(p.prompt + p.demo) <= set(ALPHABET)
    return score


@pytest.mark.parametrize("task", [AgentCalc(), AgentCalc(direct_frac=1.0), AgentPython(), AgentSearch(),
                                  AgentSearch(hops=1)])
def test_demos_are_what_the_env_produces(task):
    for seed, d in enumerate([*task.default_difficulty, *task.default_ood]):
        p = task.sample(random.Random(seed), d)
        assert p.env == {"agent_calc": "calc", "agent_python": "python", "agent_search": "search"}[task.name]
        score = _replay(p)
        direct = len(p.meta["demo_segments"]) == 1
        assert score == pytest.approx(0.0 if direct else 1.0)


def test_python_demo_kinds():
    for kind, prompt in (("sum", "sum of 1.."), ("length", "digits in ")):
        p = AgentPython(kinds=[kind]).sample(random.Random(1), 4)
        assert p.prompt.startswith(prompt)
        _replay(p)


def test_without_the_tool_is_one_turn():
    with_tool, without = AgentCalc().sample(random.Random(3), 3), AgentCalc(tool=False).sample(random.Random(3), 3)
    assert without.env == "" and without.prompt == with_tool.prompt and without.demo == "#" + without.answer
    assert "env_args" not in without.meta and "demo_segments" not in without.meta
    half = [AgentCalc(direct_frac=0.5).sample(random.Random(s), 3) for s in range(40)]
    assert 5 < sum(p.demo.startswith("#") for p in half) < 35
    assert [p.prompt for p in half] == [AgentCalc().sample(random.Random(s), 3).prompt for s in range(40)]
    for name in ("agent_calc", "agent_python", "agent_search"):
        assert name in TASKS
    with pytest.raises(ValueError, match="direct_frac"):
        AgentCalc(direct_frac=2.0)


def test_missing_libraries_name_the_extra(monkeypatch):
    from rftkit.errors import ConfigError

    monkeypatch.setitem(sys.modules, "rank_bm25", None)
    with pytest.raises(ConfigError, match=r"rank_bm25 library: pip install 'rftkit\[agent\]'"):
        SearchEnv(P("search"), docs=["a b"])
    CalcEnv(P("calc"))  # the calculator needs only jsonschema


@pytest.mark.parametrize("task,max_new", [(AgentCalc(), 24), (AgentSearch(), 24), (AgentSearch(hops=1), 24),
                                          (AgentPython(), 44)])
def test_transcripts_fit_the_built_in_context(task, max_new):
    """Each model turn (+ eos) fits max_new_tokens, and the episode loop, which starts a turn only
    while context + max_new_tokens <= 128 (bos counted), reaches the final turn."""
    for lo_hi in (task.default_difficulty, task.default_ood):
        for seed in range(200):
            rng = random.Random(seed)
            p = task.sample(rng, rng.randint(*lo_hi))
            segs = p.meta["demo_segments"]
            assert max(len(s) for s, trained in segs if trained) + 1 <= max_new
            assert 1 + len(p.prompt) + sum(len(s) for s, _ in segs[:-1]) + max_new <= 128
