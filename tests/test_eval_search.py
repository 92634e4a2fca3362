"""Test-time searches (rftkit/eval/search.py): beam search against greedy decoding and its
objective, step-level beam search with a scripted generator, a stub PRM and the verifier."""

import math
import random
import re

import pytest
import torch
import torch.nn.functional as F

from rftkit.eval.scaling import ScalingSpec, StepSearch
from rftkit.eval.search import beam_search, run_searches
from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.logprobs import token_logprobs
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.tasks.arithmetic import Arithmetic
from rftkit.tasks.base import verify
from rftkit.types import Generation, Problem

TOK = CharTokenizer()


@pytest.fixture(scope="module")
def model():
    return fitted_model()


def fitted_model() -> GPT:
    """A nano GPT fitted for 60 steps to scratchpad additions: peaked enough to end with eos
    sometimes and to make beams differ from greedy, still mostly wrong."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES["nano"]))
    task, rng = Arithmetic(op="add", scratchpad=True), random.Random(0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        seqs = [[TOK.bos_id] + TOK.encode(p.prompt + p.demo) + [TOK.eos_id]
                for p in (task.sample(rng, rng.randint(1, 2)) for _ in range(32))]
        t = max(map(len, seqs))
        ids = torch.tensor([s + [TOK.pad_id] * (t - len(s)) for s in seqs])
        logits = m(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=TOK.pad_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def _problems(n=6, op="add"):
    task = Arithmetic(op=op, scratchpad=True)
    return [task.sample(random.Random(100 + i), 1 + i % 2) for i in range(n)]


def _prompts():
    texts = [p.prompt for p in _problems()] + ["sub:9-4=", "x=", "mul:12*3="]
    return [[TOK.bos_id] + TOK.encode(t) for t in texts]


def _seq_logp(model, prompt, completion):
    with torch.no_grad():
        lp, _ = token_logprobs(model, torch.tensor([prompt + completion]))
    return float(lp[0, len(prompt):].sum())


@pytest.mark.parametrize("stop,max_new", [((), 24), ((";",), 24), (("=1",), 9)])
def test_beam_width_one_is_greedy_decoding(model, stop, max_new):
    prompts = _prompts()
    greedy = KVCacheEngine(model, TOK).generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new,
                                                                          stop=stop))
    beams = beam_search(model, TOK, prompts, 1, max_new_tokens=max_new, stop=stop)
    texts = [TOK.decode([i for i in b[0][1] if i != TOK.eos_id]) for b in beams]
    assert texts == greedy.texts
    assert [b[0][0] for b in beams] == pytest.approx(greedy.logp.sum(1).tolist(), abs=1e-4)
    ends = [("eos" if b[0][1][-1] == TOK.eos_id else "stop" if any(t.endswith(x) for x in stop) else "budget")
            for b, t in zip(beams, texts)]
    assert len(set(ends)) >= 2, ends  # rows end in different ways


def test_wider_beam_is_at_least_as_likely_as_greedy(model):
    prompts = _prompts()
    greedy = KVCacheEngine(model, TOK).generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=24))
    beams = beam_search(model, TOK, prompts, 3, max_new_tokens=24)
    better = 0
    for i, (prompt, found) in enumerate(zip(prompts, beams)):
        scores = [lp for lp, _ in found]
        assert scores == sorted(scores, reverse=True) and len(found) >= 1
        best_lp, best = found[0]
        assert _seq_logp(model, prompt, best) == pytest.approx(best_lp, abs=1e-4)  # the objective, recomputed
        n = int(greedy.mask[i].sum())
        g_lp = _seq_logp(model, prompt, greedy.tokens[i, len(prompt):len(prompt) + n].tolist())
        assert best_lp >= g_lp - 1e-4
        better += best_lp > g_lp + 1e-3
    assert better >= 1  # the search does more than greedy on some prompts


def test_run_searches_beam_records_and_metric(model):
    problems = _problems(4)
    gen = KVCacheEngine(model, TOK)
    per_problem, summary = run_searches(gen, TOK, problems, ScalingSpec(beam_width=2), max_new_tokens=24, seed=0)
    assert set(summary) == {"beam@2"}
    assert [set(r) for r in per_problem] == [{"beam"}] * 4
    for p, r in zip(problems, per_problem):
        b = r["beam"]
        assert set(b) == {"text", "score", "parsed", "logp"} and b["score"] == verify(p, b["text"]).score
        assert math.isfinite(b["logp"]) and b["logp"] <= 0
    assert summary["beam@2"] == sum(r["beam"]["score"] >= 1 for r in per_problem) / 4
    # the policy defaults to the generator's model
    again, _ = run_searches(gen, TOK, problems, ScalingSpec(beam_width=2), max_new_tokens=24, seed=0, model=model)
    assert again == per_problem
    assert run_searches(gen, TOK, problems, ScalingSpec(), max_new_tokens=24, seed=0) == ([{}] * 4, {})


class Scripted:
    """A generator over a fixed grammar: two steps from "a;" "b;" "c;", then "#7" or "#8" (the end).

    With the separator among the stops it returns one step per sample (the n samples of a
    call cycle through a seeded shuffle of the options, so each option appears when n >= 3);
    without it, a whole rollout to the answer."""

    def __init__(self, prompt: str) -> None:
        self.prompt, self.calls = prompt, []

    def generate(self, prompts, params: SamplingParams) -> Generation:
        self.calls.append(params)
        texts = []
        for ids in prompts:
            partial, rng = TOK.decode(ids)[len(self.prompt):], random.Random(params.seed)
            steps = ["a;", "b;", "c;"] if partial.count(";") < 2 else ["#7", "#8"]
            order = rng.sample(steps, len(steps))
            for k in range(params.n):
                text = order[k % len(order)]
                while ";" not in params.stop and "#" not in text:  # a rollout: on to the answer
                    text += rng.choice(["a;", "b;", "c;"] if (partial + text).count(";") < 2 else ["#7", "#8"])
                texts.append(text)
        lens = [len(t) + (not t.endswith(";")) for t in texts]  # + eos when the completion ends
        mask = torch.tensor([[1.0] * n + [0.0] * (max(lens) - n) for n in lens])
        zeros = torch.zeros_like(mask)
        return Generation(tokens=zeros.long(), logp=zeros, mask=mask, prompt_lens=torch.zeros(len(texts)),
                          truncated=torch.zeros(len(texts), dtype=torch.bool), texts=texts)


PROBLEM = Problem(task="stub", prompt="q=", answer="7", verifier="exact", demo="a;b;#7")


def _prefers(target: str):
    """A stub PRM: a step scores 1 while the text up to it is a prefix of `target`, else 0."""
    def prm(problem, texts):
        out = []
        for text in texts:
            steps = re.findall(r"[^;]*;|[^;]+$", text)
            out.append([float(target.startswith("".join(steps[: k + 1]))) for k in range(len(steps))])
        return out
    return prm


def test_step_search_with_a_prm_follows_its_preference():
    spec = ScalingSpec(prm=_prefers("a;b;#7"), step_search=StepSearch(width=2, expand=3, separator=";", guide="prm"))
    gen = Scripted("q=")
    per_problem, summary = run_searches(gen, TOK, [PROBLEM], spec, max_new_tokens=20, seed=0)
    found = per_problem[0]["step_search"]
    assert found == {"text": "a;b;#7", "score": 1.0, "parsed": "7", "guide": 1.0, "samples": 15, "rounds": 3}
    assert summary == {"step_search/prm@2x3": 1.0, "step_search/samples": 15.0}
    assert all(p.temperature == 1.0 and p.stop == (";",) and p.n == 3 for p in gen.calls)
    assert [p.max_new_tokens for p in gen.calls[:3]] == [20, 18, 18]  # the remaining budget
    # a PRM that prefers the wrong answer leads there
    spec = ScalingSpec(prm=_prefers("c;c;#8"), step_search=StepSearch(width=2, expand=3, guide="prm"))
    per_problem, summary = run_searches(Scripted("q="), TOK, [PROBLEM], spec, max_new_tokens=20, seed=0)
    assert per_problem[0]["step_search"]["text"] == "c;c;#8" and summary["step_search/prm@2x3"] == 0.0


def test_step_search_with_the_verifier_oracle_counts_its_rollouts():
    spec = ScalingSpec(step_search=StepSearch(width=2, expand=3, guide="verifier", rollouts=4))
    gen = Scripted("q=")
    per_problem, summary = run_searches(gen, TOK, [PROBLEM], spec, max_new_tokens=20, seed=5)
    found = per_problem[0]["step_search"]
    assert re.fullmatch(r"[abc];[abc];#7", found["text"]) and found["score"] == 1.0 and found["guide"] == 1.0
    # expansions 3 + 6 + 6, rollouts 4 for each of the 3 + 6 unfinished candidates of rounds 1-2
    assert found["samples"] == 15 + 4 * 9 and found["rounds"] == 3
    assert summary == {"step_search/verifier@2x3": 1.0, "step_search/samples": 51.0}
    assert sum(p.stop == () and p.n == 4 for p in gen.calls) == 9
    assert len({p.seed for p in gen.calls}) == len(gen.calls)  # every call its own seed


def test_step_search_on_the_tiny_model_is_reproducible(model):
    problems = _problems(3)
    assert all(verify(p, p.demo).correct for p in problems)
    spec = ScalingSpec(beam_width=2, step_search=StepSearch(width=2, expand=2, guide="verifier", rollouts=2,
                                                            max_steps=4))
    gen = KVCacheEngine(model, TOK)
    a = run_searches(gen, TOK, problems, spec, max_new_tokens=24, seed=3)
    b = run_searches(gen, TOK, problems, spec, max_new_tokens=24, seed=3)
    assert a == b
    per_problem, summary = a
    assert set(summary) == {"beam@2", "step_search/verifier@2x2", "step_search/samples"}
    assert 0.0 <= summary["step_search/verifier@2x2"] <= 1.0 and summary["step_search/samples"] >= 2
    for p, r in zip(problems, per_problem):
        s = r["step_search"]
        assert s["score"] == verify(p, s["text"]).score and 1 <= s["rounds"] <= 4
        assert len(TOK.encode(s["text"])) <= 24
    c, _ = run_searches(gen, TOK, problems, spec, max_new_tokens=24, seed=4)
    assert [r["step_search"]["text"] for r in c] != [r["step_search"]["text"] for r in per_problem]


def test_bad_search_settings_raise():
    gen = Scripted("q=")
    with pytest.raises(ValueError, match=r"eval\.scaling\.prm"):
        run_searches(gen, TOK, [PROBLEM], ScalingSpec(step_search=StepSearch(guide="prm")), max_new_tokens=8, seed=0)
    with pytest.raises(ValueError, match="guide"):
        run_searches(gen, TOK, [PROBLEM], ScalingSpec(step_search=StepSearch(guide="orm")), max_new_tokens=8, seed=0)
    with pytest.raises(ValueError, match="policy model"):
        run_searches(gen, TOK, [PROBLEM], ScalingSpec(beam_width=2), max_new_tokens=8, seed=0)
    assert gen.calls == []  # checked before any generation
