"""Tool-using tasks: a calculator, a Python interpreter and a search engine (issue 15).

Each names a tool environment of rftkit/envs/tool_env.py (tasks stand below envs, so the
texts an environment answers with are defined here: `tag_result`). The built-in model calls
a tool with a tag, `<calc>123*456</calc>` (the env stops its turn at "</calc>"); the result
comes back as "<r>...</r>" (never trained); a turn without a call is the answer, "#" + answer,
scored by "exact". Transcripts (prompt, then the demo):

    agent_calc    123*456=<calc>123*456</calc><r>56088</r>#56088
    agent_python  sum of 1..37=<python>print(sum(range(38)))</python><r>703</r>#703
                  digits in 7**23=<python>print(len(str(7**23)))</python><r>20</r>#20
    agent_search  0427:country of ann?<search>ann</search><r>ann is in rome</r>
                  <search>rome</search><r>peru has rome</r>#peru          (one line, no break)

Demonstrations: `demo` is the whole transcript after the prompt and meta["demo_segments"] its
[text, trained] parts (model turns trained, observations not). meta["gold_calls"] lists the
demo's calls ({"name", "arguments"}) for the env's ToolRL call_score; meta["env_args"] the
environment's knobs (every task's `env_args` knob is merged in: max_calls_per_turn,
max_result_chars). Lengths for the built-in model (128-token context): agent_calc and
agent_search turns are at most 24 tokens and their transcripts fit with max_new_tokens 24;
agent_python's code turns are up to 41 tokens (fits with max_new_tokens 44, difficulty <= 4).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rftkit.tasks.arithmetic import random_number
from rftkit.tasks.base import TASKS
from rftkit.types import ANSWER_MARKER, Problem

RESULT_TAG = "r"
_ARG = {"calc": "expr", "python": "code", "search": "query"}  # the tools' tag-syntax argument


def tag_result(text: str) -> str:
    """A tool result as the tag syntax's observation: "<r>text</r>"."""
    return f"<{RESULT_TAG}>{text}</{RESULT_TAG}>"


def tool_transcript(turns: Sequence[tuple[str, str, str]], answer: str) -> tuple[str, list[list[Any]], list[dict]]:
    """(demo, demo_segments, gold_calls) of calls `(tool, argument text, result)` then the answer."""
    segments: list[list[Any]] = []
    gold: list[dict] = []
    for tool, arg, result in turns:
        segments += [[f"<{tool}>{arg}</{tool}>", True], [tag_result(result), False]]
        gold.append({"name": tool, "arguments": {_ARG[tool]: arg}})
    segments.append([ANSWER_MARKER + answer, True])
    return "".join(s for s, _ in segments), segments, gold


def _problem(task: str, prompt: str, answer: str, difficulty: int, env: str, turns, env_args: Mapping,
             meta: dict, direct: bool = False) -> Problem:
    demo, segments, gold = tool_transcript(turns, answer)
    if direct or not env:  # answer without the tool: one trained segment
        demo, segments = ANSWER_MARKER + answer, [[ANSWER_MARKER + answer, True]]
    if env:
        meta = {**meta, "gold_calls": gold, "demo_segments": segments, "env_args": dict(env_args)}
    return Problem(task=task, prompt=prompt, answer=answer, verifier="exact", difficulty=difficulty, demo=demo,
                   source=task, meta=meta, env=env)


@TASKS.register("agent_calc")
class AgentCalc:
    """Multiplication the built-in model cannot do in its head, easy with the `calc` tool.

    Knobs:
        tool: True -> env "calc"; False -> env "" (one turn, same prompt: accuracy without the tool).
        direct_frac: share of demos that answer directly ("#56088") instead of calling the tool,
            so a pretraining mixture makes a base that sometimes calls and sometimes guesses
            (drawn for every problem, so the problems do not depend on it).
        env_args: more knobs of the environment (max_calls_per_turn, max_result_chars).
    """

    name: ClassVar[str] = "agent_calc"
    difficulty_doc: ClassVar[str] = "digits of each factor"
    default_difficulty: ClassVar[tuple[int, int]] = (3, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 4)

    def __init__(self, *, tool: bool = True, direct_frac: float = 0.0, env_args: dict | None = None) -> None:
        if not 0.0 <= direct_frac <= 1.0:
            raise ValueError(f"agent_calc direct_frac must be in [0, 1], got {direct_frac}")
        self.tool, self.direct_frac, self.env_args = bool(tool), float(direct_frac), dict(env_args or {})

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        d = max(1, difficulty)
        a, b = random_number(rng, d), random_number(rng, d)
        direct = rng.random() < self.direct_frac
        expr, answer = f"{a}*{b}", str(a * b)
        return _problem(self.name, expr + "=", answer, difficulty, "calc" if self.tool else "",
                        [("calc", expr, answer)], self.env_args, {"a": a, "b": b}, direct)


PY_KINDS = ("sum", "length")
MAX_EXPONENT = 4000  # b**e stays under Python's 4300-digit limit of int -> str


@TASKS.register("agent_python")
class AgentPython:
    """Computations solved by writing a program that prints the answer (env "python").

    Kinds: "sum" (sum of 1..n, n with `difficulty` digits, at least 2): code
    print(sum(range(n+1))); "length" (the number of digits of b**e, b in 2..9, e with
    `difficulty` digits, at most MAX_EXPONENT): code print(len(str(b**e))). Code stays in the
    built-in alphabet (no quotes or braces) and short (a code turn is at most 41 tokens).

    Knobs: kinds (the kinds drawn from, uniformly); env_args (more environment knobs).
    """

    name: ClassVar[str] = "agent_python"
    difficulty_doc: ClassVar[str] = "digits of n (sum) or of the exponent (length)"
    default_difficulty: ClassVar[tuple[int, int]] = (2, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 4)

    def __init__(self, *, kinds: Sequence[str] = PY_KINDS, env_args: dict | None = None) -> None:
        bad = [k for k in kinds if k not in PY_KINDS]
        if bad or not kinds:
            raise ValueError(f"agent_python kinds must be a non-empty list of {list(PY_KINDS)}, got {list(kinds)}")
        self.kinds, self.env_args = tuple(kinds), dict(env_args or {})

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        d = max(1, difficulty)
        kind = rng.choice(self.kinds)
        if kind == "sum":
            n = rng.randint(max(2, 10 ** (d - 1)), 10**d - 1)
            prompt, code, value = f"sum of 1..{n}=", f"print(sum(range({n + 1})))", n * (n + 1) // 2
        else:
            hi = min(10**d - 1, MAX_EXPONENT)
            base, exp = rng.randint(2, 9), rng.randint(min(10 ** (d - 1), hi), hi)
            prompt, code, value = f"digits in {base}**{exp}=", f"print(len(str({base}**{exp})))", len(str(base**exp))
        answer = str(value)
        return _problem(self.name, prompt, answer, difficulty, "python", [("python", code, answer)], self.env_args,
                        {"kind": kind})


PEOPLE = ("ann", "bob", "cal", "dan", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lea", "max", "ned", "oli",
          "pam", "ray", "sam", "tom", "uma", "val", "wes", "yan", "zoe")
CITIES = ("rome", "oslo", "lima", "riga", "baku", "doha", "suva", "kiev", "bonn", "nice", "pisa", "kobe", "agra",
          "cork", "graz", "linz", "reno", "waco", "yuma", "bern", "lyon", "metz", "faro", "vigo", "bari", "pune")
COUNTRIES = ("peru", "chad", "cuba", "fiji", "iran", "iraq", "laos", "mali", "oman", "togo")


def lives_doc(person: str, city: str) -> str:
    return f"{person} is in {city}"


def has_doc(country: str, city: str) -> str:
    """Three words, one fewer than a lives_doc: BM25's length normalisation ranks it first
    for a query of the city alone."""
    return f"{country} has {city}"


@TASKS.register("agent_search")
class AgentSearch:
    """Questions over a knowledge base generated per problem (fictional facts, so only search
    answers them), Search-R1-style: `difficulty` people (3 to 24), each living in their own
    city, each city in one of max(2, difficulty // 2) countries (at most 10). Documents: "ann
    is in rome", "peru has rome" (shuffled), in meta["env_args"]["docs"]. Two hops:
    "0427:country of ann?" needs search "ann" (-> rome), then search "rome" (-> peru); one
    hop: "0427:city of ann?". The knowledge base is not in the prompt, so a 4-digit tag of the
    problem starts it: without it problems would share prompts (pools keep prompts distinct).

    Knobs: hops (1 or 2); env_args (more env knobs; the demos assume the env's top_k = 1:
    one document per search).
    """

    name: ClassVar[str] = "agent_search"
    difficulty_doc: ClassVar[str] = "people in the knowledge base (documents = 2 x people)"
    default_difficulty: ClassVar[tuple[int, int]] = (3, 6)
    default_ood: ClassVar[tuple[int, int]] = (10, 12)

    def __init__(self, *, hops: int = 2, env_args: dict | None = None) -> None:
        if hops not in (1, 2):
            raise ValueError(f"agent_search hops must be 1 or 2, got {hops}")
        self.hops, self.env_args = hops, dict(env_args or {})

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        n = min(max(3, difficulty), len(PEOPLE))  # 3+ people: a city is in under half the documents
        people, cities = rng.sample(PEOPLE, n), rng.sample(CITIES, n)
        countries = rng.sample(COUNTRIES, min(len(COUNTRIES), max(2, n // 2)))
        country_of = {c: rng.choice(countries) for c in cities}
        docs = [lives_doc(p, c) for p, c in zip(people, cities, strict=True)]
        docs += [has_doc(country_of[c], c) for c in cities]
        rng.shuffle(docs)
        who, city = people[0], cities[0]
        country = country_of[city]
        turns = [("search", who, lives_doc(who, city))]
        if self.hops == 2:
            turns.append(("search", city, has_doc(country, city)))
        tag = f"{rng.randrange(10_000):04d}:"
        prompt, answer = (f"{tag}country of {who}?", country) if self.hops == 2 else (f"{tag}city of {who}?", city)
        env_args = {"docs": docs, "top_k": 1, **self.env_args}
        return _problem(self.name, prompt, answer, difficulty, "search", turns, env_args,
                        {"person": who, "city": city, "country": country})


__all__ = ["AgentCalc", "AgentPython", "AgentSearch", "tag_result", "tool_transcript", "RESULT_TAG"]
