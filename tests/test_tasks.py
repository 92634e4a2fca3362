"""Built-in synthetic tasks: determinism, demos that verify, alphabet, robust verifiers."""

from __future__ import annotations

import importlib.util
import inspect
import random
import re
import time
from pathlib import Path

import pytest

import rftkit.tasks  # noqa: F401  (registers the built-in tasks)
from rftkit.model.tokenizer import ALPHABET
from rftkit.tasks.base import TASKS, VERIFIERS, Task, corrupt_answer, parse_answer, verify
from rftkit.tasks.countdown import solve
from rftkit.types import ANSWER_MARKER, Problem, Verdict

BUILTIN = ["arithmetic", "countdown", "sorting", "strings"]

# (task name, knobs): every built-in task, with the knob settings that change the format.
CONFIGS = [
    ("arithmetic", {}),
    ("arithmetic", {"op": "sub"}),
    ("arithmetic", {"op": "mul"}),
    ("arithmetic", {"op": "add", "scratchpad": True}),
    ("arithmetic", {"op": "sub", "scratchpad": True}),
    ("arithmetic", {"op": "mul", "scratchpad": True}),
    ("countdown", {}),
    ("strings", {}),
    ("strings", {"compose": 2}),
    ("strings", {"ops": ["dedupe"], "compose": 2}),
    ("sorting", {}),
    ("sorting", {"op": "sort_desc"}),
    ("sorting", {"op": "max"}),
    ("sorting", {"op": "min"}),
    ("sorting", {"op": "sum"}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for name, kw in CONFIGS]


def make(name: str, knobs: dict) -> Task:
    return TASKS.get(name)(**knobs)


def difficulties(task: Task) -> list[int]:
    """Every in-distribution and OOD difficulty of the task."""
    (lo, hi), (olo, ohi) = task.default_difficulty, task.default_ood
    return list(range(lo, hi + 1)) + list(range(olo, ohi + 1))


def samples(task: Task, n: int, seed: int = 0) -> list[Problem]:
    rng = random.Random(seed)
    return [task.sample(rng, d) for d in difficulties(task) for _ in range(n)]


def test_builtins_registered_with_conventions() -> None:
    assert set(BUILTIN) <= set(TASKS.names())
    for name in BUILTIN:
        cls = TASKS.get(name)
        assert cls.name == name
        assert isinstance(cls(), Task)
        assert isinstance(cls.difficulty_doc, str) and "\n" not in cls.difficulty_doc
        (lo, hi), (olo, ohi) = cls.default_difficulty, cls.default_ood
        assert 1 <= lo <= hi < olo <= ohi  # OOD is strictly harder
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        for p in params:  # knobs: keyword-only, typed, defaulted
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, (name, p.name)
            assert p.default is not inspect.Parameter.empty, (name, p.name)
            assert p.annotation is not inspect.Parameter.empty, (name, p.name)


@pytest.mark.parametrize(("name", "knobs"), CONFIGS, ids=IDS)
def test_sample_is_deterministic(name: str, knobs: dict) -> None:
    assert samples(make(name, knobs), 5, seed=7) == samples(make(name, knobs), 5, seed=7)
    assert samples(make(name, knobs), 5, seed=7) != samples(make(name, knobs), 5, seed=8)


@pytest.mark.parametrize(("name", "knobs"), CONFIGS, ids=IDS)
def test_demo_verifies_and_uses_alphabet(name: str, knobs: dict) -> None:
    task = make(name, knobs)
    for p in samples(task, 30):
        assert p.task == p.source == name
        assert p.verifier in VERIFIERS
        assert p.demo is not None and parse_answer(p.demo) == p.answer
        verdict = verify(p, p.demo)
        assert verdict.score == 1.0, (p, verdict)
        text = p.prompt + p.demo
        assert set(text) <= set(ALPHABET), text
        # a task tag first, and "=" so the completion's start is unambiguous
        assert re.match(r"[a-z]+:", p.prompt) and p.prompt.endswith("="), p.prompt
        assert ANSWER_MARKER not in p.prompt


def bad_completions(p: Problem) -> list[str]:
    return [
        p.demo + "9",  # wrong answer: appending a digit changes any of these answers
        "",
        "no marker at all",
        ANSWER_MARKER,
        ANSWER_MARKER * 3,
        ANSWER_MARKER + "!!?? ()",
        "\x00\uffff" + ANSWER_MARKER + "\u0663\u0664",  # control chars, arabic digits
        "9" * 1_000_000,
        ANSWER_MARKER + "1" * 1_000_000,
        ANSWER_MARKER + "(" * 1_000_000,
        ANSWER_MARKER + "1+" * 500_000 + "1",
    ]


@pytest.mark.parametrize(("name", "knobs"), CONFIGS, ids=IDS)
def test_wrong_and_malformed_score_zero(name: str, knobs: dict) -> None:
    task = make(name, knobs)
    for p in samples(task, 1)[:3]:
        for completion in bad_completions(p):
            start = time.perf_counter()
            verdict = verify(p, completion)
            assert time.perf_counter() - start < 0.5, completion[:40]
            assert isinstance(verdict, Verdict)
            assert verdict.score == 0.0 and verdict.reason, (completion[:40], verdict)


@pytest.mark.parametrize("name", ["arithmetic", "sorting", "strings"])
def test_corrupted_answers_score_zero(name: str) -> None:
    rng = random.Random(3)
    changed = 0
    for _, knobs in [c for c in CONFIGS if c[0] == name]:
        for p in samples(make(name, knobs), 10):
            bad = corrupt_answer(p.demo, rng)
            if bad == p.demo:  # e.g. the '-' or ',' was picked: nothing to corrupt
                continue
            changed += 1
            assert verify(p, bad).score == 0.0, (p, bad)
    assert changed > 50


@pytest.mark.parametrize(("name", "knobs"), CONFIGS, ids=IDS)
def test_ood_is_longer_and_lengths_fit_context(name: str, knobs: dict) -> None:
    task = make(name, knobs)
    rng = random.Random(0)

    def lengths(lo: int, hi: int) -> list[int]:
        probs = [task.sample(rng, d) for d in range(lo, hi + 1) for _ in range(40)]
        return [len(p.prompt + p.demo) for p in probs]

    ind, ood = lengths(*task.default_difficulty), lengths(*task.default_ood)
    assert sum(ood) / len(ood) > sum(ind) / len(ind)
    assert max(ind) <= 64  # short at the default difficulty
    assert max(ood) <= 126  # bos + text + eos within the tiny model's context of 128


def countdown_problem(numbers: list[int], target: int) -> Problem:
    return Problem(
        task="countdown",
        prompt="",
        answer="",
        verifier="countdown",
        meta={"numbers": numbers, "target": target},
    )


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("#(12-7)*3", "correct"),
        ("#3*(12-7)", "correct"),  # another solution than the solver's
        ("step 12-7=5\n#3 * (12 - 7)", "correct"),
        ("#(12-7)*3+3-3", "uses 3 3 times"),
        ("#(12-7)*3*1", "uses 1 not in numbers"),
        ("#12+3", "does not use 7"),
        ("#12+7-3", "value 16 != target 15"),
        ("#(12-7)*3=15", "unparsable"),
        ("#12/4+7+3", "unparsable"),
        ("#-3+7+12", "unparsable"),
        ("#((12-7)*3", "unparsable"),
        ("#(12-7))*3", "unparsable"),
        ("#__import__('os').system('ls')", "unparsable"),
        ("#3**2+7+12", "unparsable"),
        ("#1e1+7-3+1", "unparsable"),
        ("#()", "unparsable"),
        ("#" + "(" * 150 + "3" + ")" * 150, "unparsable"),  # over the length bound
    ],
)
def test_countdown_verifier_cases(completion: str, reason: str) -> None:
    verdict = verify(countdown_problem([3, 7, 12], 15), completion)
    assert verdict.reason.startswith(reason), verdict
    assert verdict.score == (1.0 if reason == "correct" else 0.0)


def test_countdown_repeated_numbers_and_alternatives() -> None:
    assert verify(countdown_problem([5, 5, 2], 12), "#5+5+2").correct
    assert verify(countdown_problem([5, 5, 2], 12), "#5+5+2-5+5").reason.startswith("uses 5")
    assert verify(countdown_problem([5, 2], 3), "#5-2").correct
    task = make("countdown", {})
    for p in samples(task, 10):
        alt = f"#({p.answer})"  # same value, same numbers, different text
        assert alt != p.demo and verify(p, alt).correct
        assert solve(p.meta["numbers"], p.meta["target"]) == p.answer
    assert solve([2, 3], 100) is None


def test_task_knobs_are_validated() -> None:
    with pytest.raises(ValueError):
        make("arithmetic", {"op": "div"})
    with pytest.raises(ValueError):
        make("strings", {"ops": ["shout"]})
    with pytest.raises(ValueError):
        make("sorting", {"op": "median"})


@pytest.fixture
def isolated_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register parts without leaking them (or clashing) across tests."""
    for registry in (TASKS, VERIFIERS):
        items = {k: v for k, v in registry._items.items() if k != "parity"}
        monkeypatch.setattr(registry, "_items", items)


def test_example_user_task_loads_from_path(isolated_registries: None) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "my_task.py"
    spec = importlib.util.spec_from_file_location("rftkit_example_my_task", path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert "parity" in TASKS and "parity" in VERIFIERS
    for knobs in ({}, {"trace": True}):
        task = TASKS.get("parity")(**knobs)
        assert isinstance(task, Task)
        for p in samples(task, 10):
            assert verify(p, p.demo).correct
            assert set(p.prompt + p.demo) <= set(ALPHABET)
            wrong = "even" if p.answer == "odd" else "odd"
            assert verify(p, ANSWER_MARKER + wrong).score == 0.0
            for completion in ("", "#", "#maybe", "x" * 1_000_000):
                assert verify(p, completion).score == 0.0
