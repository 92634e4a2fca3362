"""Test-time-scaling selectors over one problem's n samples (pure functions; docs/evaluation.md).

Each selector picks one answer out of n sampled completions, with no extra generation; a
problem scores 1 when the pick is correct (verifier score >= 1), else 0, in expectation
when the pick is random. Notation: n samples; correct[i] 0/1; parsed[i] the parsed answer
(None when unparsable).

Ranking selectors (best-of-n) pick the sample with the highest score, the earlier sample
on ties (as `metrics.best_of_n`), so the order is strict:

    verifier  score = correctness: an oracle, bon = pass@n
    logprob   score = the sample's mean token log-prob under the sampling policy
    rm        score = an outcome reward model's score
    prm       score = min over the completion's step scores (a chain is as good as its
              weakest step); a completion with no step score gets -inf, ranked below every
              scored one: the PRM saw nothing in it to vouch for

Voting selectors give each parsed answer a weight, the sum over its samples of a per-sample
weight, and pick the heaviest answer: `maj` (weight 1, `metrics.maj_at_k`), `wmaj/rm`
(sigmoid of the RM score, RM scores being logits) and `wmaj/logprob` (exp of the mean token
log-prob, the geometric-mean token probability). Unparsable samples never vote; no parsed
answer scores 0. Tie rule (as `metrics.vote`): answers whose weights are equal (to a relative
1e-9, so float sums in another order still tie) share the pick: (#correct tied) / (#tied).

Curves (compute scaling): for k in 1, 2, 4, ..., n (powers of two, plus n), the expected
accuracy of a selector applied to a uniformly random k-subset of the n samples. For ranking
selectors it is exact: sample i is the pick of a k-subset iff the subset holds i and k - 1
of the b_i samples ranked below it, which C(b_i, k - 1) of the C(n, k) subsets do, so

    curve@k = sum_i correct_i * C(b_i, k - 1) / C(n, k)

(curve/verifier@k = pass@k; curve@n = bon@n). maj uses `maj_at_k`'s exact estimator; weighted
votes enumerate every k-subset when C(n, k) <= `WMAJ_EXACT_LIMIT`, else average over
`WMAJ_MC_DRAWS` random subsets from a generator seeded by (n, k), so results are deterministic.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

from rftkit.eval.metrics import answer_correctness, best_of_n, maj_at_k

WMAJ_EXACT_LIMIT = 2_000
WMAJ_MC_DRAWS = 2_000
TIE_REL_TOL = 1e-9


def curve_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself."""
    ks = [1 << j for j in range(n.bit_length())]
    return ks + [n] if ks and ks[-1] != n else ks


def ranked_below(scores: Sequence[float]) -> list[int]:
    """Per sample, how many samples rank strictly below it (higher score first, earlier first on ties)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))
    below = [0] * len(scores)
    for pos, i in enumerate(order):
        below[i] = pos
    return below


def bon_at_k(correct: Sequence[bool], scores: Sequence[float], k: int) -> float:
    """Expected accuracy of best-of-k by `scores` over a uniformly random k-subset (exact)."""
    n = len(correct)
    if not 1 <= k <= n:
        raise ValueError(f"best-of-{k} needs 1 <= k <= n, got n={n}")
    hits = sum(math.comb(b, k - 1) for c, b in zip(correct, ranked_below(scores)) if c)
    return hits / math.comb(n, k)


def prm_score(step_scores: Sequence[float]) -> float:
    """A completion's PRM score: its weakest step; -inf without any step score."""
    return min(step_scores) if step_scores else -math.inf


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float], right: dict[str, bool]) -> float:
    """Pick the answer with the largest summed weight (None never votes); ties share the pick."""
    total: dict[str, float] = {}
    for a, w in zip(answers, weights):
        if a is not None:
            total[a] = total.get(a, 0.0) + w
    if not total:
        return 0.0
    top = max(total.values())
    tied = [a for a, w in total.items() if math.isclose(w, top, rel_tol=TIE_REL_TOL)]
    return sum(right.get(a, False) for a in tied) / len(tied)


def wmaj_at_k(parsed: Sequence[str | None], correct: Sequence[bool], weights: Sequence[float], k: int,
              seed: int = 0) -> float:
    """Expected accuracy of a weighted vote over a uniformly random k-subset (module docstring)."""
    n = len(parsed)
    if not 1 <= k <= n:
        raise ValueError(f"wmaj@{k} needs 1 <= k <= n, got n={n}")
    right = answer_correctness(parsed, correct)
    if math.comb(n, k) <= WMAJ_EXACT_LIMIT:
        subsets = list(itertools.combinations(range(n), k))
    else:
        rng = random.Random(f"wmaj/{seed}/{n}/{k}")
        subsets = [rng.sample(range(n), k) for _ in range(WMAJ_MC_DRAWS)]
    return sum(weighted_vote([parsed[i] for i in s], [weights[i] for i in s], right)
               for s in subsets) / len(subsets)


def problem_scaling(correct: Sequence[bool], parsed: Sequence[str | None], logp_mean: Sequence[float],
                    rm_scores: Sequence[float] | None = None,
                    prm_scores: Sequence[Sequence[float]] | None = None, curve: bool = True) -> dict[str, float]:
    """One problem's selector results: bon/<ranking>@n, wmaj/<weight>@n and, with `curve`,
    curve/<selector>@k for k in `curve_ks(n)`. rm/prm keys only when those scores are given."""
    correct = [bool(c) for c in correct]
    ranking = {"verifier": [float(c) for c in correct], "logprob": list(logp_mean)}
    weights = {"logprob": [math.exp(x) for x in logp_mean]}
    if rm_scores is not None:
        ranking["rm"] = list(rm_scores)
        weights["rm"] = [sigmoid(s) for s in rm_scores]
    if prm_scores is not None:
        ranking["prm"] = [prm_score(s) for s in prm_scores]
    out = {f"bon/{name}@n": float(best_of_n([float(c) for c in correct], sc)) for name, sc in ranking.items()}
    n = len(correct)
    right = answer_correctness(parsed, correct)
    out.update({f"wmaj/{name}@n": weighted_vote(parsed, w, right) for name, w in weights.items()})
    if curve:
        for k in curve_ks(n):
            out.update({f"curve/{name}@{k}": bon_at_k(correct, sc, k) for name, sc in ranking.items()})
            out[f"curve/maj@{k}"] = maj_at_k(parsed, correct, k)
            out.update({f"curve/wmaj/{name}@{k}": wmaj_at_k(parsed, correct, w, k) for name, w in weights.items()})
    return out
