"""The `math` verifier: answer equivalence with Hugging Face `math-verify` (optional extra `math`).

math-verify parses LaTeX and plain expressions with sympy and compares them (\\boxed answers,
fractions vs decimals, sets, intervals, equations). It can take seconds, or hang in C code
(sympy on 10^{10^{10}}), on adversarial input, so this verifier declares
`@isolation("process")`: the RewardRunner runs it in a worker process it kills after the
per-call timeout. math-verify's own signal.alarm timeouts are used as a first, graceful layer
when called on the main thread of a process (they do not work elsewhere).

What is compared:
    gold: the text after '####' for a GSM8K solution, else the whole reference, tried as is and
          wrapped in $...$ (math-verify needs delimiters for bare LaTeX such as \\frac{1}{2})
    pred: the content of <answer>...</answer> or after '####' when present (wrapped likewise),
          else the last `max_chars` characters of the completion (math-verify then finds
          \\boxed{}, "final answer is $...$", or the last expression itself)
"""

from __future__ import annotations

import threading

from rftkit.rewards.extract import extract_answer
from rftkit.rewards.spec import isolation
from rftkit.tasks.base import VERIFIERS
from rftkit.types import Problem, Verdict


def _math_verify():
    try:
        import math_verify
    except ImportError as e:
        raise ImportError("the 'math' verifier needs the math-verify package: "
                          "pip install 'rftkit[math]' (or pip install 'math-verify[antlr4_13_2]')") from e
    return math_verify


def _parse(mv, text: str, timeout: int | None) -> list:
    """Bare LaTeX ("\\{1, 2\\}", "\\frac12") needs $...$ to be read as LaTeX: try that first."""
    if not any(d in text for d in ("$", "\\(", "\\[", "\\boxed")):
        parsed = mv.parse(f"${text}$", parsing_timeout=timeout)
        if parsed:
            return parsed
    return mv.parse(text, parsing_timeout=timeout)


@VERIFIERS.register("math")
@isolation("process")
def verify_math(problem: Problem, completion: str, *, float_rounding: int = 6, max_chars: int = 20_000,
                inner_timeout: int = 5) -> Verdict:
    """1 iff math-verify finds the prediction equivalent to the reference answer."""
    mv = _math_verify()
    timeout = inner_timeout if threading.current_thread() is threading.main_thread() else None
    gold_text = problem.answer.rsplit("####", 1)[1].strip() if "####" in problem.answer else problem.answer
    gold = _parse(mv, gold_text, timeout)
    if not gold:
        return Verdict(0.0, None, f"reference {gold_text[:50]!r} could not be parsed")
    region, where = extract_answer(completion)
    text = region if where in ("tag", "####") and region else completion[-max_chars:]
    pred = _parse(mv, text[-max_chars:], timeout) if text.strip() else []
    if not pred:
        return Verdict(0.0, None, "no parsable answer")
    ok = mv.verify(gold, pred, float_rounding=float_rounding, timeout_seconds=timeout)
    shown = str(pred[-1])
    return Verdict(1.0 if ok else 0.0, shown[:200], "correct" if ok else f"expected {gold_text[:50]}")


__all__ = ["verify_math"]
