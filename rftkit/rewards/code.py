"""The `unit_tests` verifier: run the model's program and the problem's tests in the sandbox.

Problem fields it reads (MBPP / HumanEval style):
    meta["tests"]       list of statement blocks, e.g. ["assert f(1) == 2", ...] (or one string)
    meta["test_setup"]  optional code run after the program, before the tests (MBPP test_setup_code)
    meta["check"], meta["entry_point"]   HumanEval: `check` defines check(candidate); the single
                        test becomes check + "\\ncheck(<entry_point>)"
    meta["prepend_prompt"]  HumanEval: the program is prompt + completion (a function body)

The program is the last ```python fenced block of the completion (else the whole completion).
Score: passed / total ("fraction", the default; Klear's soft code reward) or 1 only when all
pass ("all"); a program that crashes, times out or prints past the cap gets what its tests
reported before (usually 0). A sandbox that cannot run at all (e.g. a work dir its uid cannot
enter) raises SandboxError, which the runner counts in reward/errors. The sandbox enforces its
own limits, so the runner calls this on a thread pool (`@isolation("thread")`): one interpreter
process per call.
"""

from __future__ import annotations

import re

from rftkit.rewards.sandbox import SandboxError, SandboxLimits, run_tests
from rftkit.rewards.spec import isolation
from rftkit.tasks.base import VERIFIERS
from rftkit.types import Problem, Verdict

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str) -> str:
    """The last fenced code block (```python ... ```), else the completion itself."""
    blocks = _FENCE.findall(completion[-200_000:])
    return blocks[-1] if blocks else completion


def problem_tests(problem: Problem) -> list[str]:
    """The tests of a problem as a list of statement blocks (see the module docstring)."""
    meta = problem.meta
    if "check" in meta:
        return [f"{meta['check']}\ncheck({meta['entry_point']})"]
    tests = meta.get("tests", [])
    return [tests] if isinstance(tests, str) else list(tests)


@VERIFIERS.register("unit_tests")
@isolation("thread")
def verify_unit_tests(problem: Problem, completion: str, *, scoring: str = "fraction", wall_time: float = 10.0,
                      cpu_time: float = 5.0, memory_mb: int = 1024, max_chars: int = 100_000) -> Verdict:
    """Fraction (or all-or-nothing) of the problem's tests the program passes in the sandbox."""
    if scoring not in ("fraction", "all"):
        raise ValueError(f"scoring must be 'fraction' or 'all', got {scoring!r}")
    tests = problem_tests(problem)
    if not tests:
        return Verdict(0.0, None, "problem has no tests (meta['tests'])")
    code = extract_code(completion)
    if problem.meta.get("prepend_prompt"):
        code = problem.prompt + code
    if len(code) > max_chars:
        return Verdict(0.0, None, f"program longer than {max_chars} characters")
    limits = SandboxLimits(wall_time=problem.meta.get("timeout", wall_time), cpu_time=cpu_time, memory_mb=memory_mb)
    res = run_tests(code, tests, limits, setup=problem.meta.get("test_setup", ""))
    if res.error:  # the sandbox failed, not the program: an error for the runner, not a silent 0
        raise SandboxError(res.error)
    passed, total = res.tests_passed, len(tests)
    score = passed / total if scoring == "fraction" else float(passed == total)
    reason = f"{passed}/{total} tests passed" + ("" if res.ok else f" ({res.summary()})")
    return Verdict(score, code[:2000], reason)


__all__ = ["verify_unit_tests", "extract_code", "problem_tests"]
