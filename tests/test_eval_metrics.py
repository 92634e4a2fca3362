"""Evaluation metrics against brute force and hand-computed values (docs/evaluation.md)."""

import itertools
import math
import random
from collections import Counter

import pytest
import torch

from rftkit.eval.analysis import base_unsolved
from rftkit.eval.evaluate import evaluate, headline_keys, summarize
from rftkit.eval.metrics import avg_at_n, best_of_n, distinct_answers, distinct_n, maj_at_k, vote
from rftkit.eval.passk import pass_at_k


def _brute_pass(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_equals_enumeration_over_all_k_subsets(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_pass(correct, k), abs=1e-12), (n, c, k)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def _brute_maj(parsed, correct, k):
    right = {}
    for a, c in zip(parsed, correct):
        if a is not None:
            right[a] = right.get(a, False) or c
    total = 0.0
    subsets = list(itertools.combinations(range(len(parsed)), k))
    for s in subsets:
        votes = Counter(parsed[i] for i in s if parsed[i] is not None)
        if votes:
            top = max(votes.values())
            tied = [a for a, v in votes.items() if v == top]
            total += sum(right[a] for a in tied) / len(tied)
    return total / len(subsets)


def test_maj_at_k_tie_rule_gives_fractional_credit():
    # 2 votes for "7" (right) and 2 for "8" (wrong): a tie, half credit
    assert maj_at_k(["7", "8", "7", "8"], [True, False, True, False], 4) == 0.5
    # three-way tie with one right answer: a third
    assert maj_at_k(["1", "2", "3"], [False, True, False], 3) == pytest.approx(1 / 3)
    # unparsed samples do not vote: one "5" beats two None
    assert maj_at_k([None, "5", None], [False, True, False], 3) == 1.0
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    # a wrong majority beats a right minority
    assert maj_at_k(["4", "4", "9"], [False, False, True], 3) == 0.0
    assert vote(["a", "b"], {"a": True}) == 0.5


def test_maj_at_k_equals_enumeration():
    rng = random.Random(0)
    for _ in range(30):
        n = rng.randint(1, 7)
        parsed = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        correct = [p == "1" for p in parsed]
        for k in range(1, n + 1):
            assert maj_at_k(parsed, correct, k) == pytest.approx(_brute_maj(parsed, correct, k)), (parsed, k)


def test_maj_at_k_large_n_uses_seeded_monte_carlo():
    parsed = ["1"] * 30 + ["2"] * 20 + [None] * 14
    correct = [p == "1" for p in parsed]
    a, b = maj_at_k(parsed, correct, 32), maj_at_k(parsed, correct, 32)
    assert a == b and 0.8 < a <= 1.0  # deterministic; "1" usually wins


def test_distinct_n_on_hand_strings():
    assert distinct_n(["abab"], 1) == 2 / 4
    assert distinct_n(["abab"], 2) == 2 / 3  # ab, ba, ab
    assert distinct_n(["abc", "abd"], 2) == 3 / 4  # ab, bc, ab, bd
    assert distinct_n(["abc", "abd"], 3) == 1.0
    assert distinct_n(["a", "b"], 2) == 0.0  # no bigram at all
    assert distinct_n([["12", "+", "3"], ["12", "+", "4"]], 1) == 4 / 6  # any token sequences
    assert distinct_answers(["3", "3", None, "4"]) == 2


def test_avg_and_best_of_n():
    assert avg_at_n([True, False, False, True]) == 0.5
    assert best_of_n([0.0, 0.5, 1.0]) == 1.0
    assert best_of_n([0.0, 1.0, 0.0], ranking=[0.9, 0.1, 0.9]) == 0.0  # the scorer picks a wrong one (first on ties)
    assert best_of_n([0.0, 1.0, 0.0], ranking=[0.1, 0.9, 0.3]) == 1.0


def _record(prompt, source, difficulty, parsed, correct, greedy_ok=False):
    return {"prompt": prompt, "answer": "x", "task": "t", "source": source, "difficulty": difficulty,
            "greedy": {"text": "#x" if greedy_ok else "#y", "score": float(greedy_ok), "parsed": "x", "reason": ""},
            "samples": [{"text": f"#{p}" if p else "?", "score": float(c), "parsed": p, "reason": "", "len": 3,
                         "truncated": p is None, "format": p is not None} for p, c in zip(parsed, correct)],
            "n_correct": sum(correct), "distinct_n": [0.5, 0.6, 0.7]}


def test_summarize_breaks_down_by_difficulty_and_source():
    recs = [_record("p1", "add", 1, ["1", "1", "2", None], [True, True, False, False], greedy_ok=True),
            _record("p2", "sub", 2, ["3", "4", "4", "4"], [False, False, False, False])]
    s = summarize(recs, 4, [1, 2], extended=True)
    assert s["greedy_acc"] == 0.5 and s["greedy_acc/src=add"] == 1.0 and s["greedy_acc/d2"] == 0.0
    assert s["pass@1"] == pytest.approx(0.25) and s["pass@1/src=add"] == pytest.approx(0.5)
    assert s["pass@3"] == pytest.approx(0.5 * _brute_pass([True, True, False, False], 3))
    assert s["maj@2/src=add"] == pytest.approx(_brute_maj(["1", "1", "2", None], [True, True, False, False], 2))
    assert s["avg@n"] == pytest.approx(0.25) and s["best_of_n"] == 0.5
    assert s["distinct_answers"] == 2.0 and s["distinct_2"] == pytest.approx(0.6)
    assert s["truncated_frac"] == pytest.approx(1 / 8) and s["format_frac"] == pytest.approx(7 / 8)
    assert headline_keys(s, [1, 2]) == ["greedy_acc", "avg@n", "pass@1", "maj@1", "pass@2", "maj@2"]
    one_source = summarize([recs[0]], 4, [1], extended=True)
    assert not any("/src=" in k for k in one_source)  # a single source has no source breakdown
    basic = summarize(recs, 4, [1, 2])  # the default: the keys of earlier versions + the source breakdown
    assert list(basic) == [f"{m}{sfx}" for sfx in ["", "/d1", "/d2", "/src=add", "/src=sub"]
                           for m in ["greedy_acc", "reward_mean", "pass@1", "pass@2"]]
    assert all(basic[k] == s[k] for k in basic)


def test_base_unsolved_counts_what_the_trained_model_newly_solves():
    base = [_record("p1", "a", 1, ["1", "2"], [True, False]), _record("p2", "a", 1, ["2", "2"], [False, False]),
            _record("p3", "b", 1, ["2", None], [False, False])]
    trained = [_record("p1", "a", 1, ["1", "1"], [True, True]), _record("p2", "a", 1, ["1", "2"], [True, False]),
               _record("p3", "b", 1, ["2", "2"], [False, False])]
    res = base_unsolved(base, trained)
    assert (res["problems"], res["base_unsolved"], res["trained_solved"]) == (3, 2, 1)
    assert res["trained_solved_frac"] == 0.5 and res["trained_pass@1"] == pytest.approx(0.25)
    assert res["by_source"] == {"a": {"base_unsolved": 1, "trained_solved": 1},
                                "b": {"base_unsolved": 1, "trained_solved": 0}}
    assert res["solved_prompts"] == ["p2"]


def _nano():
    import rftkit.rollout.kv_engine  # noqa: F401 - registers "kv"
    from rftkit.model.io import build_model
    from rftkit.model.tokenizer import CharTokenizer
    from rftkit.rollout.base import GENERATORS

    torch.manual_seed(0)
    tok = CharTokenizer()
    model = build_model("nano", 64, tok)
    return model, tok, GENERATORS.bind("kv")(model, tok)


def _problems():
    from rftkit.data.pool import TaskSpec, build_pools

    specs = [TaskSpec("arithmetic", "add", 1.0, (1, 1), (2, 2), {"op": "add"}),
             TaskSpec("arithmetic", "sub", 1.0, (1, 1), (2, 2), {"op": "sub"})]
    return build_pools(specs, 16, 3, 2, seed=0).test


def test_evaluate_keeps_its_old_call_and_output_and_extends_on_request():
    model, tok, gen = _nano()
    kw = dict(n=4, ks=[1, 4], temperature=1.0, max_new_tokens=6, seed=1)
    old, old_records = evaluate(gen, tok, _problems(), **kw)
    assert {k for k in old if "/src=" not in k} == {f"{m}{sfx}" for sfx in ["", "/d1"]
                                                     for m in ["greedy_acc", "reward_mean", "pass@1", "pass@4"]}
    summary, records = evaluate(gen, tok, _problems(), extended=True, **kw)
    assert records == old_records and all(summary[k] == v for k, v in old.items())
    for key in ["greedy_acc", "reward_mean", "pass@1", "pass@2", "pass@4", "maj@4", "avg@n", "best_of_n",
                "distinct_answers", "distinct_1", "distinct_3", "len_mean", "truncated_frac", "format_frac",
                "pass@1/d1", "pass@1/src=add", "maj@4/src=sub"]:
        assert key in summary, key
    assert "entropy" not in summary and not any(k.startswith(("bon/", "wmaj/", "curve/")) for k in summary)
    assert summarize(records, 4, [1, 4], extended=True) == summary  # records rebuild the summary
    r = records[0]
    assert {"source", "distinct_n"} <= set(r) and {"len", "truncated", "format"} <= set(r["samples"][0])
    assert all(1 <= s["len"] <= 6 for s in r["samples"])


def test_entropy_and_reward_model_hook():
    from rftkit.eval.entropy import policy_entropy
    from rftkit.eval.scaling import ScalingSpec
    from rftkit.model.logprobs import token_logprobs
    from rftkit.rollout.base import SamplingParams

    model, tok, gen = _nano()
    spec = ScalingSpec(reward_model=lambda p, texts: [-len(t) for t in texts], curve=False)
    summary, records = evaluate(gen, tok, _problems(), n=2, ks=[1], temperature=1.0, max_new_tokens=5, seed=2,
                                extended=True, model=model, scaling=spec)
    assert 0 < summary["entropy"] <= math.log(tok.vocab_size) + 1e-6
    assert "bon/rm@n" in summary and len(records[0]["rm_scores"]) == 2
    g = gen.generate([[tok.bos_id] + tok.encode("add:1+2=")], SamplingParams(n=3, max_new_tokens=4, seed=0))
    with torch.no_grad():
        _, ent = token_logprobs(model, g.tokens)
    manual = float((ent * g.mask).sum() / g.mask.sum())
    assert policy_entropy(model, g, batch_size=2) == pytest.approx(manual, rel=1e-5)
    assert model.training  # mode restored


def test_evaluate_stops_completions_at_the_rollout_stop_strings():
    """Evaluation ends completions where training does (`rollout.stop`), greedy and sampled."""
    from rftkit.rollout.base import SamplingParams

    model, tok, gen = _nano()
    seen: list[SamplingParams] = []

    class Spy:
        def generate(self, prompts, params):
            seen.append(params)
            return gen.generate(prompts, params)

    kw = dict(n=4, ks=[1], temperature=1.0, max_new_tokens=12, seed=3)
    _, free = evaluate(Spy(), tok, _problems(), **kw)
    stops = sorted({c for r in free for s in r["samples"] for c in s["text"]})[:3]  # characters the model emits
    assert stops and [p.stop for p in seen] == [(), ()]
    seen.clear()
    _, cut = evaluate(Spy(), tok, _problems(), stop=tuple(stops), **kw)
    assert [p.stop for p in seen] == [tuple(stops)] * 2
    texts = [r["greedy"]["text"] for r in cut] + [s["text"] for r in cut for s in r["samples"]]
    hit = [t for t in texts if any(c in t for c in stops)]
    assert hit and all(t[-1] in stops and not any(c in t[:-1] for c in stops) for t in hit)
