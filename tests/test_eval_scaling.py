"""Test-time-scaling selectors and curves (rftkit/eval/selection.py) against hand-computed
values and brute-force enumeration over all k-subsets; `evaluate(..., scaling=)` end to end on
the tiny GPT; the report's and `rftkit compare`'s accuracy-vs-samples plots."""

import itertools
import json
import math
import random
import sys
import types

import pytest
import torch
import yaml

from rftkit.eval.evaluate import evaluate, summarize
from rftkit.eval.passk import pass_at_k
from rftkit.eval.scaling import ScalingSpec
from rftkit.eval.selection import (
    bon_at_k,
    curve_ks,
    prm_score,
    problem_scaling,
    ranked_below,
    sigmoid,
    weighted_vote,
    wmaj_at_k,
)

# ---------------------------------------------------------------- hand-computed values


def test_curve_ks_are_powers_of_two_plus_n():
    assert curve_ks(1) == [1] and curve_ks(4) == [1, 2, 4] and curve_ks(6) == [1, 2, 4, 6]
    assert curve_ks(16) == [1, 2, 4, 8, 16]


def test_weighted_vote_tie_between_two_answers_gives_half_credit():
    assert weighted_vote(["7", "8"], [0.5, 0.5], {"7": True, "8": False}) == 0.5
    # RM logits 2, -2 vs 1, -1: sigmoid(x) + sigmoid(-x) = 1 for both answers, up to float rounding
    out = problem_scaling([True, True, False, False], ["7", "7", "8", "8"], [-1.0] * 4,
                          rm_scores=[2.0, -2.0, 1.0, -1.0], curve=False)
    assert out["wmaj/rm@n"] == 0.5 and out["wmaj/logprob@n"] == 0.5


def test_weighted_vote_unparsable_answers_never_win():
    # the two unparsed samples carry almost all the weight but do not vote
    assert weighted_vote([None, None, "8"], [0.99, 0.99, 0.01], {"8": True}) == 1.0
    assert weighted_vote([None, None], [1.0, 1.0], {}) == 0.0


def test_reward_weighted_vote_hand_computed():
    parsed, correct, rm = ["3", "4", "4"], [True, False, False], [3.0, -1.0, -1.0]
    # "3": sigmoid(3) = 0.953 beats "4": 2 sigmoid(-1) = 0.538, where the plain majority picks "4"
    out = problem_scaling(correct, parsed, [-2.0, -1.0, -1.0], rm_scores=rm)
    assert out["wmaj/rm@n"] == 1.0 and out["curve/maj@2"] == pytest.approx(1 / 3)
    # pairs: {3,4} -> "3" (1), {3,4'} -> "3" (1), {4,4'} -> "4" (0)
    assert out["curve/wmaj/rm@2"] == pytest.approx(2 / 3)
    # log-prob weights: exp(-2) = 0.135 vs 2 exp(-1) = 0.736 -> "4"
    assert out["wmaj/logprob@n"] == 0.0
    assert sigmoid(0.0) == 0.5 and sigmoid(-800.0) == 0.0 and sigmoid(800.0) == 1.0


def test_best_of_n_with_equal_scores_picks_the_first_sample():
    wrong_first = problem_scaling([False, True, True], ["1", "2", "2"], [-1.0] * 3, rm_scores=[0.5] * 3,
                                  prm_scores=[[0.7], [0.7], [0.7]], curve=False)
    assert (wrong_first["bon/logprob@n"], wrong_first["bon/rm@n"], wrong_first["bon/prm@n"]) == (0.0, 0.0, 0.0)
    assert wrong_first["bon/verifier@n"] == 1.0  # the oracle: any correct sample
    right_first = problem_scaling([True, False, False], ["2", "1", "1"], [-1.0] * 3, rm_scores=[0.5] * 3,
                                  prm_scores=[[0.7], [0.7], [0.7]], curve=False)
    assert (right_first["bon/logprob@n"], right_first["bon/rm@n"], right_first["bon/prm@n"]) == (1.0, 1.0, 1.0)


def test_prm_scores_a_completion_by_its_weakest_step_and_no_step_as_minus_inf():
    assert prm_score([0.9, 0.2, 0.8]) == 0.2 and prm_score([]) == -math.inf
    # min steps: -inf, 0.1, 0.05 -> sample 1
    out = problem_scaling([False, True, False], ["1", "2", "3"], [0.0] * 3, prm_scores=[[], [0.1], [0.2, 0.05]])
    assert out["bon/prm@n"] == 1.0
    # k = 2: sample 1 is the pick of {0,1} and {1,2}: 2 of 3 pairs
    assert out["curve/prm@2"] == pytest.approx(2 / 3)


def test_ranking_curve_hand_computed():
    scores, correct = [3.0, 1.0, 2.0], [False, True, False]
    assert ranked_below(scores) == [2, 0, 1]
    assert bon_at_k(correct, scores, 1) == pytest.approx(1 / 3)  # only when drawn alone
    assert bon_at_k(correct, scores, 2) == 0.0 and bon_at_k(correct, scores, 3) == 0.0
    assert ranked_below([1.0, 1.0, 1.0]) == [2, 1, 0]  # ties: the earlier sample ranks higher


# ---------------------------------------------------------------- against brute force


def _brute_rank(correct, scores, k):
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(correct[max(s, key=lambda i: (scores[i], -i))] for s in subsets) / len(subsets)


def _brute_vote(parsed, correct, weights, k):
    right = {}
    for a, c in zip(parsed, correct):
        if a is not None:
            right[a] = right.get(a, False) or c
    total, subsets = 0.0, list(itertools.combinations(range(len(parsed)), k))
    for s in subsets:
        w = {}
        for i in s:
            if parsed[i] is not None:
                w[parsed[i]] = w.get(parsed[i], 0.0) + weights[i]
        if w:
            tied = [a for a in w if math.isclose(w[a], max(w.values()), rel_tol=1e-9)]
            total += sum(right[a] for a in tied) / len(tied)
    return total / len(subsets)


def _random_problem(rng: random.Random, n: int = 6):
    correct = [rng.random() < 0.4 for _ in range(n)]
    parsed = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
    logp = [-float(rng.randint(1, 3)) for _ in range(n)]  # few values: ties happen
    rm = [float(rng.randint(-2, 2)) for _ in range(n)]
    prm = [[float(rng.randint(0, 3)) for _ in range(rng.randint(0, 3))] for _ in range(n)]
    return correct, parsed, logp, rm, prm


@pytest.mark.parametrize("seed", range(12))
def test_curves_equal_brute_force_over_all_k_subsets(seed):
    correct, parsed, logp, rm, prm = _random_problem(random.Random(seed))
    n = len(correct)
    out = problem_scaling(correct, parsed, logp, rm_scores=rm, prm_scores=prm)
    ranking = {"verifier": [float(c) for c in correct], "logprob": logp, "rm": rm,
               "prm": [min(s) if s else -math.inf for s in prm]}
    weights = {"rm": [1 / (1 + math.exp(-s)) for s in rm], "logprob": [math.exp(x) for x in logp]}
    for k in range(1, n + 1):
        for name, sc in ranking.items():
            assert bon_at_k(correct, sc, k) == pytest.approx(_brute_rank(correct, sc, k), abs=1e-12), (name, k)
        for name, w in weights.items():
            brute = _brute_vote(parsed, correct, w, k)
            assert wmaj_at_k(parsed, correct, w, k) == pytest.approx(brute, abs=1e-12), (name, k)
    for k in curve_ks(n):
        assert out[f"curve/maj@{k}"] == pytest.approx(_brute_vote(parsed, correct, [1.0] * n, k), abs=1e-12)
        assert out[f"curve/verifier@{k}"] == pytest.approx(pass_at_k(n, sum(correct), k), abs=1e-12)
    for name in ranking:
        assert out[f"curve/{name}@{n}"] == out[f"bon/{name}@n"]
    for name in weights:
        assert out[f"curve/wmaj/{name}@{n}"] == out[f"wmaj/{name}@n"]


def test_weighted_vote_monte_carlo_beyond_the_exact_limit_is_seeded_and_close():
    rng = random.Random(3)
    n, k = 16, 8  # C(16, 8) = 12870 > 2000 subsets
    parsed = [rng.choice(["1", "2", "3"]) for _ in range(n)]
    correct = [a == "1" for a in parsed]
    w = [rng.random() for _ in range(n)]
    mc = wmaj_at_k(parsed, correct, w, k)
    assert mc == wmaj_at_k(parsed, correct, w, k)
    assert mc == pytest.approx(_brute_vote(parsed, correct, w, k), abs=0.05)


# ---------------------------------------------------------------- evaluate end to end


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

    specs = [TaskSpec("arithmetic", "add", 1.0, (1, 1), (2, 2), {"op": "add"})]
    return build_pools(specs, 16, 3, 2, seed=0).test


def _stub_rm(problem, texts):
    return [float(len(t) % 3) - 1.0 for t in texts]


def _stub_prm(problem, texts):
    return [[0.1 * (ord(c) % 10) for c in t[:3]] for t in texts]  # an empty text has no step


KW = dict(n=4, ks=[1, 4], temperature=1.0, max_new_tokens=6, seed=1, extended=True)


def test_evaluate_with_scaling_adds_selectors_and_curves_and_keeps_the_rest():
    from rftkit.eval.evaluate import encode_prompts
    from rftkit.rollout.base import SamplingParams

    _, tok, gen = _nano()
    plain, plain_records = evaluate(gen, tok, _problems(), **KW)
    spec = ScalingSpec(reward_model=_stub_rm, prm=_stub_prm)
    summary, records = evaluate(gen, tok, _problems(), **KW, scaling=spec)
    added = [k for k in summary if k not in plain]
    assert {k: summary[k] for k in plain} == plain  # without scaling: the same summary, less the new keys
    expected = {f"bon/{s}@n" for s in ("verifier", "logprob", "rm", "prm")} | {"wmaj/rm@n", "wmaj/logprob@n"}
    expected |= {f"curve/{s}@{k}" for s in ("verifier", "logprob", "rm", "prm", "maj", "wmaj/rm", "wmaj/logprob")
                 for k in (1, 2, 4)}
    assert set(added) == expected
    assert all(0.0 <= summary[k] <= 1.0 for k in added)
    assert summary["curve/verifier@4"] == pytest.approx(summary["pass@4"])
    assert summary["curve/maj@4"] == pytest.approx(summary["maj@4"])
    assert summarize(records, 4, [1, 4], extended=True) == summary  # records rebuild the summary
    r = records[0]
    assert len(r["rm_scores"]) == 4 and len(r["prm_scores"]) == 4 and set(r["scaling"]) == expected
    assert [{k: v for k, v in rec.items() if k not in ("rm_scores", "prm_scores", "scaling")}
            for rec in records] == plain_records
    # logp_mean is the sampling policy's mean token log-prob of each sample
    g = gen.generate(encode_prompts(tok, _problems()), SamplingParams(n=4, max_new_tokens=6, temperature=1.0, seed=2))
    manual = ((g.logp * g.mask).sum(1) / g.mask.sum(1)).tolist()
    got = [s["logp_mean"] for rec in records for s in rec["samples"]]
    assert got == pytest.approx(manual, abs=1e-6) and all(x <= 0 for x in got)


def test_evaluate_without_curves_and_without_scorers():
    _, tok, gen = _nano()
    summary, records = evaluate(gen, tok, _problems(), **KW, scaling=ScalingSpec(curve=False))
    assert {"bon/verifier@n", "bon/logprob@n", "wmaj/logprob@n"} <= set(summary)
    assert not any(k.startswith("curve/") or "rm@" in k for k in summary)
    assert "rm_scores" not in records[0] and "prm_scores" not in records[0]


def test_evaluate_merges_search_results(monkeypatch):
    """The searches (rftkit/eval/search.py) are called with the spec; a stub stands in here."""
    calls = []

    def run_searches(generator, tok, problems, spec, *, max_new_tokens, seed, stop, model):
        calls.append((len(problems), spec.beam_width, max_new_tokens))
        return [{"beam": {"score": float(i % 2)}} for i in range(len(problems))], {"beam/acc": 0.5}

    monkeypatch.setitem(sys.modules, "rftkit.eval.search", types.SimpleNamespace(run_searches=run_searches))
    _, tok, gen = _nano()
    problems = _problems()
    summary, records = evaluate(gen, tok, problems, **KW, scaling=ScalingSpec(curve=False, beam_width=2))
    assert calls == [(len(problems), 2, 6)] and summary["beam/acc"] == 0.5
    assert [r["search"] for r in records] == [{"beam": {"score": float(i % 2)}} for i in range(len(problems))]


# ---------------------------------------------------------------- report and compare


def _scaling_run(tmp_path, name: str, shift: float):
    run = tmp_path / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"stages": [{"name": "rl", "steps": 1}],
                                                     "eval": {"ks": [1, 4]}}))
    res = {"greedy_acc": 0.5, "pass@1": 0.3, "pass@4": 0.6, "format_frac": 1.0, "bon/verifier@n": 0.6,
           "bon/logprob@n": 0.4 + shift, "wmaj/logprob@n": 0.45}
    for k in (1, 2, 4):
        res |= {f"curve/verifier@{k}": 0.3 + 0.1 * k, f"curve/logprob@{k}": 0.3 + shift,
                f"curve/maj@{k}": 0.3 + 0.02 * k, f"curve/wmaj/logprob@{k}": 0.3 + 0.03 * k}
    (run / "eval" / "rl.json").write_text(json.dumps({"stage": "rl", "step": 1, "results": {"test": res}}))
    return run


def test_report_shows_selectors_and_accuracy_vs_samples(tmp_path):
    from rftkit.report.html import build_html
    from rftkit.report.rundata import ORACLE, load_run, selector_lines

    run = load_run(_scaling_run(tmp_path, "a", 0.0))
    lines = selector_lines(run.results[0]["results"]["test"])
    assert list(lines) == [ORACLE, "best-of-k by log-prob", "majority vote", "log-prob-weighted vote"]
    assert lines[ORACLE] == pytest.approx({1: 0.4, 2: 0.5, 4: 0.7})
    html = build_html(run)
    assert 'id="scaling-table"' in html and 'href="#scaling"' in html
    assert "accuracy vs samples after rl, ID (test)" in html and html.count("data:image/png;base64,") >= 1


def test_report_without_scaling_has_no_scaling_section(tmp_path):
    from rftkit.report.html import build_html
    from rftkit.report.rundata import load_run

    run_dir = _scaling_run(tmp_path, "a", 0.0)
    res = {"greedy_acc": 0.5, "pass@1": 0.3, "format_frac": 1.0}
    (run_dir / "eval" / "rl.json").write_text(json.dumps({"stage": "rl", "step": 1, "results": {"test": res}}))
    html = build_html(load_run(run_dir))
    assert 'id="scaling"' not in html and 'href="#scaling"' not in html


def test_compare_plots_each_selector_with_one_line_per_run(tmp_path):
    from rftkit.report.compare import compare_runs

    runs = [_scaling_run(tmp_path, "a", 0.0), _scaling_run(tmp_path, "b", 0.1)]
    html = compare_runs(runs, tmp_path / "all").read_text()
    for label in ("best-of-k by verifier", "best-of-k by log-prob", "majority vote", "log-prob-weighted vote"):
        assert f"{label} vs samples, final models, ID (test)" in html
    one = compare_runs(runs, tmp_path / "maj", selectors=["maj"]).read_text()
    assert "majority vote vs samples" in one and "best-of-k by log-prob vs samples" not in one
