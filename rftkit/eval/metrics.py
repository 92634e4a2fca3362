"""Per-problem evaluation metrics over n samples (pure functions; docs/evaluation.md).

Every function here takes one problem's samples (texts, parsed answers, correctness) and
returns a number; `evaluate.summarize` averages them over problems. Nothing here needs a
model, so stored records (eval/<stage>_<split>.jsonl) can be re-scored without one.

- pass@k   unbiased estimator (passk.py), for every k <= n.
- maj@k    expected accuracy of a majority vote over k samples drawn without replacement from
           the n, averaged exactly over all k-subsets (Monte Carlo over `MAJ_MC_DRAWS` seeded
           subsets when there are more than `MAJ_EXACT_LIMIT` of them). Only parsed answers
           vote. Tie rule: when several answers share the most votes, the vote is a uniform
           random pick among them, so it scores (#correct among the tied) / (#tied); no
           parsed answer at all scores 0.
- avg@n    mean correctness of the n samples (score >= 1), the plain estimate of pass@1.
- best-of-n by verifier: the best verifier score among the n samples (an oracle upper bound;
           equals pass@n for 0/1 rewards). By a scorer (reward model): the verifier score
           of the sample the scorer ranks highest (first one on ties).
- distinct-n: distinct n-grams / total n-grams over one problem's samples (Li et al. 2016),
           on the tokenizer's tokens.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

MAJ_EXACT_LIMIT = 20_000
MAJ_MC_DRAWS = 2_000


def answer_correctness(parsed: Sequence[str | None], correct: Sequence[bool]) -> dict[str, bool]:
    """Parsed answer -> correct; an answer counts as correct if any sample giving it was."""
    out: dict[str, bool] = {}
    for a, c in zip(parsed, correct):
        if a is not None:
            out[a] = out.get(a, False) or bool(c)
    return out


def vote(answers: Sequence[str | None], right: dict[str, bool]) -> float:
    """Majority vote over `answers` (None does not vote) with the fractional tie rule."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    return sum(right.get(a, False) for a in tied) / len(tied)


def maj_at_k(parsed: Sequence[str | None], correct: Sequence[bool], k: int, seed: int = 0) -> float:
    """Expected majority-vote accuracy of k of the n samples (see the module docstring)."""
    n = len(parsed)
    if not 1 <= k <= n:
        raise ValueError(f"maj@{k} needs 1 <= k <= n, got n={n}")
    right = answer_correctness(parsed, correct)
    if k == n:
        return vote(parsed, right)
    if math.comb(n, k) <= MAJ_EXACT_LIMIT:
        return _maj_exact(parsed, right, k)
    rng = random.Random(f"maj/{seed}/{n}/{k}")
    return sum(vote([parsed[i] for i in rng.sample(range(n), k)], right) for _ in range(MAJ_MC_DRAWS)) / MAJ_MC_DRAWS


def _maj_exact(parsed: Sequence[str | None], right: dict[str, bool], k: int) -> float:
    """Average of `vote` over all k-subsets, enumerated as vote counts per answer.

    A subset taking x_j of the c_j samples of answer j occurs prod_j C(c_j, x_j) times, so
    enumerating the count vectors (never more than the subsets) gives the exact average.
    """
    counts = Counter(parsed)
    cats = list(counts.items())  # (answer or None, c)
    total = 0.0

    def rec(j: int, left: int, weight: int, picked: list[tuple[str | None, int]]) -> None:
        nonlocal total
        if j == len(cats):
            if left == 0:
                total += weight * _vote_counts(picked, right)
            return
        a, c = cats[j]
        room = sum(cc for _, cc in cats[j + 1 :])
        for x in range(max(0, left - room), min(c, left) + 1):
            rec(j + 1, left - x, weight * math.comb(c, x), picked + [(a, x)] if x else picked)

    rec(0, k, 1, [])
    return total / math.comb(len(parsed), k)


def _vote_counts(picked: list[tuple[str | None, int]], right: dict[str, bool]) -> float:
    votes = [(a, x) for a, x in picked if a is not None]
    if not votes:
        return 0.0
    top = max(x for _, x in votes)
    tied = [a for a, x in votes if x == top]
    return sum(right.get(a, False) for a in tied) / len(tied)


def avg_at_n(correct: Sequence[bool]) -> float:
    return sum(map(bool, correct)) / len(correct) if correct else 0.0


def best_of_n(scores: Sequence[float], ranking: Sequence[float] | None = None) -> float:
    """Verifier score of the best sample: by the verifier itself (ranking None) or by `ranking`."""
    if not scores:
        return 0.0
    if ranking is None:
        return max(scores)
    best = max(range(len(scores)), key=lambda i: (ranking[i], -i))
    return scores[best]


def ngrams(seq: Sequence, n: int) -> list[tuple]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(sequences: Sequence[Sequence], n: int) -> float:
    """Distinct n-grams / total n-grams over all `sequences` (0 when there is no n-gram)."""
    grams = [g for s in sequences for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_answers(parsed: Sequence[str | None]) -> int:
    """Number of different parsed answers (unparsable samples not counted)."""
    return len({a for a in parsed if a is not None})
