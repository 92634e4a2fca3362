"""Imported once by the reward workers' forkserver: registries filled, math-verify warmed up.

Workers are forked from that server, so a worker replaced after a timeout starts with sympy,
the LaTeX grammar and math-verify's caches already loaded (a cold first call takes ~1 s).
"""

import rftkit.rewards  # noqa: F401  (registers the verifiers)

try:
    import math_verify

    math_verify.verify(math_verify.parse("$\\frac{1}{2}$"), math_verify.parse("\\boxed{0.5}"))
except Exception:  # noqa: BLE001 - optional: without math-verify only the "math" verifier is missing
    pass
