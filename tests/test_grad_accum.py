"""Gradient accumulation changes how a batch is computed, never the update: for every aggregation,
objective kind and the inert-row skip, the weights after `update_policy` with grad_accum 1, 2
and 4 agree within 1e-6 (an earlier version divided each micro-batch by its own token count)."""

import copy
from types import SimpleNamespace

import pytest
import torch

from rftkit.algos.advantages import ADVANTAGES
from rftkit.algos.losses import AGGREGATIONS
from rftkit.algos.objectives import OBJECTIVES
from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.train.batches import demo_batch
from rftkit.train.step import Term
from rftkit.train.update import UpdateState, update_policy
from rftkit.types import DemoBatch, Problem, RolloutBatch

TOK = CharTokenizer()
REWARDS = [1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0]  # two inert groups of 4


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=48, **SIZES["nano"]))


def _batch(model) -> RolloutBatch:
    """4 prompts x 4 samples with stop-at-newline lengths, so micro-batches hold different
    numbers of tokens (the case where per-micro-batch normalization differs)."""
    prompts = [TOK.encode(p) for p in ("1+2=", "30+4=", "7+8=", "12+3=")]
    gen = KVCacheEngine(model, TOK).generate(prompts, SamplingParams(n=4, max_new_tokens=9, seed=3))
    gids = torch.arange(4).repeat_interleave(4)
    r = torch.tensor(REWARDS, dtype=torch.float32)
    mask = gen.mask.clone()
    for i in range(16):  # ragged completions: keep 2..9 trained tokens per row
        keep = 2 + (i * 5) % 8
        cols = mask[i].nonzero().squeeze(1)
        mask[i, cols[keep:]] = 0.0
    adv = ADVANTAGES.get("grpo")(r, gids, mask)[0]
    return RolloutBatch(tokens=gen.tokens, mask=mask, old_logp=gen.logp, group_ids=gids, rewards=r,
                        advantages=adv, truncated=gen.truncated, problems=[], texts=gen.texts, verdicts=[])


def _demos():
    pairs = [(Problem(task="t", prompt=f"{a}+{b}=", answer=str(a + b), verifier="exact"), str(a + b) * (1 + a % 3))
             for a, b in [(1, 2), (30, 4), (7, 8), (12, 3), (5, 5), (60, 7)]]
    return demo_batch(TOK, pairs, max_len=48)


def _parts(model, objectives, grad_accum, minibatches, skip):
    terms = []
    for name, params in objectives:
        fn = OBJECTIVES.bind(name, params)
        terms.append(Term(name, fn, lambda p: 1.0))
    needs = frozenset().union(*(t.fn.needs for t in terms))
    return SimpleNamespace(
        model=model, ref_model=None, critic=None, controller=None, terms=terms, needs=needs,
        sampling=SamplingParams(n=4, temperature=1.0, max_new_tokens=9), skip_inert_rows=skip,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5), update_epochs=1,
        minibatches=minibatches, grad_accum=grad_accum, grad_clip=0.0)


def _updated(objectives, grad_accum, minibatches=1, skip=False, rollouts=True, demos=False):
    base = _model()
    batch = _batch(base) if rollouts else None
    model = copy.deepcopy(base)
    parts = _parts(model, objectives, grad_accum, minibatches, skip)
    metrics = update_policy(parts, UpdateState(), batch, _demos() if demos else None,
                            {t.name: 1.0 for t in parts.terms})
    return model, metrics


def _assert_same(a, b):
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), (k, float((p - q).abs().max()))


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("agg", AGGREGATIONS.names())
def test_policy_update_does_not_depend_on_grad_accum(agg, skip):
    objectives = [("policy", {"agg": agg})]
    ref, m1 = _updated(objectives, 1, skip=skip)
    for k in (2, 4):
        model, mk = _updated(objectives, k, skip=skip)
        _assert_same(ref, model)
        assert mk["loss/total"] == pytest.approx(m1["loss/total"], abs=1e-6)
    moved = _model()
    assert any(not torch.equal(p, q) for p, q in zip(ref.parameters(), moved.parameters()))


@pytest.mark.parametrize("agg", AGGREGATIONS.names())
def test_sft_and_mixed_updates_do_not_depend_on_grad_accum(agg):
    """Demonstrations alone (SFT), and a policy + SFT sum in one step (hybrids)."""
    for objectives, rollouts in (([("sft", {"agg": agg})], False),
                                 ([("policy", {"agg": agg}), ("sft", {"agg": agg})], True)):
        ref, m1 = _updated(objectives, 1, rollouts=rollouts, demos=True)
        for k in (2, 4):
            model, mk = _updated(objectives, k, rollouts=rollouts, demos=True)
            _assert_same(ref, model)
            assert mk["loss/sft"] == pytest.approx(m1["loss/sft"], abs=1e-6)


def test_minibatches_with_accumulation_equal_minibatches_without():
    """Each minibatch is one optimizer step normalized by its own rows; accumulation inside it
    must not change that step."""
    objectives = [("policy", {"agg": "token_mean"}), ("entropy", {"agg": "seq_mean_token_mean"})]
    ref, _ = _updated(objectives, 1, minibatches=2)
    model, _ = _updated(objectives, 4, minibatches=2)
    _assert_same(ref, model)


def test_fewer_demonstrations_than_minibatches_still_train_every_rollout_row():
    """3 demonstrations, 4 minibatches: every rollout minibatch still steps the optimizer (zip
    used to cut the rollout slices to the 3 demonstration slices, so a quarter never trained)."""
    base = _model()
    full = _demos()
    batch, demos = _batch(base), DemoBatch(tokens=full.tokens[:3], mask=full.mask[:3], problems=full.problems[:3])
    parts = _parts(copy.deepcopy(base), [("policy", {}), ("sft", {})], 1, 4, False)
    steps = []
    orig = parts.optimizer.step
    parts.optimizer.step = lambda: steps.append(1) or orig()
    update_policy(parts, UpdateState(), batch, demos, {"policy": 1.0, "sft": 1.0})
    assert len(steps) == 4
