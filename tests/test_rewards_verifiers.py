"""Rule-based and math verifiers: right, wrong, malformed and adversarial inputs, and speed."""

from __future__ import annotations

import time

import pytest

import rftkit.rewards  # noqa: F401  (registers the verifiers)
from rftkit.rewards import Component, RewardRunner, RewardSpec
from rftkit.rewards.extract import boxed, extract_answer, last_number, normalize_text, parse_number
from rftkit.tasks.base import VERIFIERS
from rftkit.types import Problem, Verdict

MB = "9" * 1_000_000
ADVERSARIAL = [
    MB,  # a 1 MB answer
    "<answer>" + MB + "</answer>",
    "\\boxed{" + "\\frac{" * 20_000 + "1",  # deeply nested, unclosed LaTeX
    "\\boxed{" + "{" * 50_000 + "1" + "}" * 50_001,  # deeply nested, closed
    "<think>" * 100_000 + "</answer>" * 10,
    "1," * 500_000,
    "\\boxed{10^{10^{10^{10}}}}",
    "#" * 1_000_000,
    "",
]


def P(answer: str, verifier: str, prompt: str = "q", **meta) -> Problem:
    return Problem("t", prompt, answer, verifier, meta=meta)


def check(verifier: str, answer: str, completion: str, **knobs) -> Verdict:
    v = VERIFIERS.get(verifier)(P(answer, verifier), completion, **knobs)
    assert isinstance(v, Verdict) and 0.0 <= v.score <= 1.0
    return v


def test_extraction_helpers():
    assert extract_answer("x <answer> 42 </answer>") == ("42", "tag")
    assert extract_answer("<answer>\\boxed{7}</answer>") == ("7", "tag")
    assert extract_answer("so \\boxed{\\frac{1}{2}} done") == ("\\frac{1}{2}", "boxed")
    assert extract_answer("Natalia sold 48/2 = 24 clips.\n#### 72\n") == ("72", "####")
    assert extract_answer("3+4=7\n#57", marker=True) == ("57", "marker")
    assert extract_answer("no answer here") == (None, None)
    assert boxed("\\boxed{a{b}c}") == "a{b}c" and boxed("\\boxed{open") is None and boxed("\\boxed 5$.") == "5"
    assert normalize_text("  The  Eiffel-Tower! ") == "eiffel tower"
    assert parse_number("$1,234.50") == parse_number("1234.5")
    assert parse_number("\\frac{3}{4}") == parse_number("0.75") == parse_number("3/4")
    assert parse_number("50\\%") == 50 and parse_number("5 \\text{cm}") == 5
    assert parse_number("abc") is None and parse_number("1/0") is None and parse_number("inf") is None
    assert last_number("first 3 then -4.5e2 and 7/8 end") == "7/8"


@pytest.mark.parametrize("answer,completion,score", [
    ("72", "so she sold 72 clips. #### 72", 1.0),
    ("Natalia ... #### 72", "<answer>72.0</answer>", 1.0),
    ("1,234", "\\boxed{1234}", 1.0),
    ("0.5", "<answer>\\frac{1}{2}</answer>", 1.0),
    ("3", "\\boxed{3.0000001}", 1.0),  # within rel_tol 1e-6
    ("3", "\\boxed{3.01}", 0.0),
    ("3", "the answer is 4", 0.0),
    ("3", "no number at all", 0.0),
    ("1e999999", "\\boxed{1e999999}", 1.0),
    ("1e999999", "\\boxed{1e999998}", 0.0),
])
def test_numeric(answer, completion, score):
    assert check("numeric", answer, completion).score == score
    assert check("numeric", "3", "\\boxed{3.01}", rel_tol=0.01).score == 1.0


@pytest.mark.parametrize("completion,score", [
    ("The answer is (B).", 1.0), ("<answer>B</answer>", 1.0), ("Thinking...\nB.", 1.0), ("\\boxed{B}", 1.0),
    ("The answer is (C).", 0.0), ("A cat sat on the mat", 0.0), ("", 0.0),
])
def test_multiple_choice(completion, score):
    assert check("multiple_choice", "B", completion).score == score


def test_multiple_choice_with_option_texts():
    p = P("Paris", "multiple_choice", choices=["London", "Paris", "Rome"])
    verify = VERIFIERS.get("multiple_choice")
    assert verify(p, "<answer>B</answer>").score == 1.0
    assert verify(p, "<answer>paris</answer>").score == 1.0
    assert verify(p, "<answer>Rome</answer>").score == 0.0


def test_normalized_exact_and_aliases():
    assert check("normalized_exact", "The Eiffel Tower", "<answer>eiffel tower!</answer>").score == 1.0
    assert check("normalized_exact", "Paris", "I think...\nparis.").score == 1.0
    assert check("normalized_exact", "Paris", "<answer>Lyon</answer>").score == 0.0
    p = P("United States", "normalized_exact", aliases=["USA", "US"])
    assert VERIFIERS.get("normalized_exact")(p, "<answer>U.S.A.</answer>").score == 0.0  # 'u s a' != 'usa'
    assert VERIFIERS.get("normalized_exact")(p, "<answer>usa</answer>").score == 1.0


@pytest.mark.parametrize("completion,score", [
    ("<think>a</think><answer>5</answer>", 1.0),
    ("  <think>\nlong\n</think>\n<answer> 5 </answer>\n", 1.0),
    ("<think>a</think><answer>5</answer> trailing", 0.0),
    ("<answer>5</answer>", 0.0),
    ("<think>a</think><think>b</think><answer>5</answer>", 0.0),
    ("<think>a</think><answer> </answer>", 0.0),
])
def test_r1_format(completion, score):
    assert check("r1_format", "x", completion).score == score


def test_r1_format_when_the_prompt_opens_think():
    p = P("x", "r1_format", prompt="User: 2+3?\nAssistant: <think>")
    assert VERIFIERS.get("r1_format")(p, "add</think><answer>5</answer>").score == 1.0


def test_answer_format_regex_partial_and_similarity():
    assert check("answer_format", "x", "\\boxed{4}").score == 1.0 and check("answer_format", "x", "four").score == 0.0
    assert check("regex", "x", "ID: AB-123", pattern=r"[A-Z]{2}-\d{3}").score == 1.0
    assert check("regex", "x", "ID: AB-123", pattern=r"[A-Z]{2}-\d{3}", fullmatch=True).score == 0.0
    assert check("list_partial", "1,2,3,4", "<answer>1, 2, 5, 4</answer>").score == 0.75
    assert check("list_partial", "[1, 2, 3]", "<answer>[3, 2, 1]</answer>", ordered=False).score == 1.0
    assert check("list_partial", "1 2 3", "<answer>1 2 3 4 5 6</answer>").score == 0.5  # extras cost
    assert check("similarity", "hello world", "<answer>hello world</answer>").score == 1.0
    assert 0.9 < check("similarity", "hello world", "<answer>hello word</answer>").score < 1.0
    assert check("similarity", "hello", "").score == 0.0


@pytest.mark.parametrize("verifier", ["numeric", "multiple_choice", "normalized_exact", "r1_format", "answer_format",
                                      "list_partial", "similarity", "exact"])
def test_inline_verifiers_are_fast_on_adversarial_input(verifier):
    for completion in ADVERSARIAL:
        t0 = time.perf_counter()
        check(verifier, "42", completion)
        assert time.perf_counter() - t0 < 0.5, f"{verifier} slow on {completion[:30]!r}"


math_verify = pytest.importorskip("math_verify")


@pytest.fixture(scope="module")
def math_runner():
    with RewardRunner(RewardSpec((Component("correct", "math"),)), workers=2, timeout=3.0) as runner:
        yield runner


MATH_CASES = [
    ("\\frac{1}{2}", "so the answer is \\boxed{0.5}", 1.0),
    ("\\frac{1}{2}", "<answer>\\frac{2}{4}</answer>", 1.0),
    ("Natalia sold 48/2 = 24 clips. #### 72", "She sold 72 clips.\n#### 72", 1.0),
    ("x^2+2x+1", "\\boxed{(x+1)^2}", 1.0),
    ("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}", 1.0),
    ("3", "the answer is \\boxed{4}", 0.0),
    ("3", "I do not know", 0.0),
    ("3", "\\boxed{", 0.0),
]


def test_math_verifier_right_wrong_malformed(math_runner):
    problems = [P(a, "math") for a, _, _ in MATH_CASES]
    verdicts, metrics = math_runner.score(problems, [c for _, c, _ in MATH_CASES])
    assert [v.score for v in verdicts] == [s for _, _, s in MATH_CASES], [v.reason for v in verdicts]
    assert metrics["reward/errors"] == 0 and metrics["reward/timeouts"] == 0


def test_math_verifier_adversarial_inputs_answer_within_the_timeout():
    completions = ADVERSARIAL + ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}"]
    timeout = 1.0
    with RewardRunner(RewardSpec((Component("correct", "math"),)), workers=2, timeout=timeout) as runner:
        t0 = time.monotonic()
        verdicts, metrics = runner.score([P("42", "math") for _ in completions], completions)
        elapsed = time.monotonic() - t0
        assert all(v.score == 0.0 for v in verdicts)
        assert metrics["reward/timeouts"] + metrics["reward/errors"] == len(runner.last_failures)
        # 2 workers: even if every call hit the timeout, the batch ends within n/2 timeouts
        assert elapsed < timeout * len(completions) / 2 + 2.0, elapsed
        ok, _ = runner.score([P("2", "math")], ["\\boxed{2}"])  # the pool still works afterwards
        assert ok[0].score == 1.0


def test_math_verifier_missing_package_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_math_verify(name, *args, **kw):
        if name == "math_verify":
            raise ImportError("no module")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_math_verify)
    with pytest.raises(ImportError, match=r"rftkit\[math\]"):
        VERIFIERS.get("math")(P("1", "math"), "\\boxed{1}")
