"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code",
arXiv:2107.03374, eq. 1): with n samples of which c are correct,
    pass@k = 1 - C(n - c, k) / C(n, k),
computed as a product to stay exact and stable for large n.
"""

from __future__ import annotations


def pass_at_k(n: int, c: int, k: int) -> float:
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if c < 0 or c > n:
        raise ValueError(f"correct count {c} outside 0..{n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong
