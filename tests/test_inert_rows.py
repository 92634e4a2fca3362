"""Rows with all-zero advantages are left out of the training forward only where that changes
nothing: the weights after an update equal those of the update that forwards every row."""

import copy
from types import SimpleNamespace

import pytest
import torch

from rftkit.algos.advantages import ADVANTAGES
from rftkit.algos.losses import POLICY_LOSSES
from rftkit.algos.objectives import OBJECTIVES, inert_at_zero_advantage
from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.train.step import Term
from rftkit.train.update import UpdateState, update_policy
from rftkit.types import RolloutBatch

TOK = CharTokenizer()
INERT = ["pg", "ppo_clip", "dual_clip", "gppo", "gspo", "cispo"]


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=48, **SIZES["nano"]))


def _batch(model, rewards: list[float], group=4, seed=0) -> RolloutBatch:
    """4 prompts x `group` samples; rewards give the groups (all-equal groups get advantage 0)."""
    prompts = [TOK.encode(p) for p in ("1+2=", "30+4=", "7+8=", "12+3=")]
    gen = KVCacheEngine(model, TOK).generate(prompts, SamplingParams(n=group, max_new_tokens=6, seed=seed))
    gids = torch.arange(len(prompts)).repeat_interleave(group)
    r = torch.tensor(rewards, dtype=torch.float32)
    adv = ADVANTAGES.get("grpo")(r, gids, gen.mask)[0]
    return RolloutBatch(tokens=gen.tokens, mask=gen.mask, old_logp=gen.logp, group_ids=gids, rewards=r,
                        advantages=adv, truncated=gen.truncated, problems=[], texts=gen.texts, verdicts=[])


def _parts(model, objectives, *, skip: bool, epochs=1, minibatches=1, grad_accum=1):
    terms = []
    for name, params in objectives:
        fn = OBJECTIVES.bind(name, params)
        terms.append(Term(name, fn, lambda p: 1.0))
    return SimpleNamespace(
        model=model, ref_model=None, critic=None, controller=None, terms=terms, needs=frozenset({"rollout"}),
        sampling=SamplingParams(n=4, temperature=1.0), skip_inert_rows=skip,
        # SGD with momentum: Adam's g / (|g| + eps) would blow float noise of ~0 gradients up to lr
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1), update_epochs=epochs,
        minibatches=minibatches, grad_accum=grad_accum, grad_clip=1.0)


def _update_both(objectives, rewards, steps=2, **kw):
    """Run `steps` updates with and without the skip from the same start; -> (models, metrics)."""
    base = _model()
    batch = _batch(base, rewards)
    out = []
    for skip in (False, True):
        model = copy.deepcopy(base)
        parts = _parts(model, objectives, skip=skip, **kw)
        state = UpdateState()
        metrics = [update_policy(parts, state, batch, None, {t.name: 1.0 for t in parts.terms}, seed=s)
                   for s in range(steps)]
        out.append((model, metrics))
    return out


MIXED = [1, 0, 1, 0] + [1, 1, 1, 1] + [0, 0, 0, 0] + [0, 0, 1, 0]  # groups 2 and 3 are inert


def _assert_same_weights(a, b):
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5), k


@pytest.mark.parametrize("loss", INERT)
def test_skipping_inert_rows_leaves_the_update_unchanged(loss):
    agg = "seq_mean_token_mean" if loss == "gspo" else "token_mean"
    (full, m_full), (fast, m_fast) = _update_both([("policy", {"loss": loss, "agg": agg})], MIXED)
    _assert_same_weights(full, fast)
    assert [m["loss/total"] for m in m_full] == pytest.approx([m["loss/total"] for m in m_fast], abs=1e-6)
    assert m_fast[0]["perf/inert_rows_skipped"] == 0.5 and m_full[0]["perf/inert_rows_skipped"] == 0.0


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"])
def test_skip_keeps_every_aggregation_denominator(agg):
    (full, _), (fast, _) = _update_both([("policy", {"agg": agg})], MIXED)
    _assert_same_weights(full, fast)


def test_skip_with_epochs_minibatches_and_accumulation():
    kw = {"epochs": 2, "minibatches": 2, "grad_accum": 2}
    (full, m_full), (fast, m_fast) = _update_both([("policy", {})], MIXED, **kw)
    _assert_same_weights(full, fast)
    assert m_full[-1]["policy/clipfrac"] >= 0 and m_fast[-1]["perf/inert_rows_skipped"] == 0.5


def test_all_rows_inert_still_steps_the_optimizer_with_zero_gradient():
    """A batch of only all-equal groups: no forward, but the optimizer steps on a zero gradient
    (momentum and weight decay move the weights) as it would without the skip."""
    objectives = [("policy", {})]
    (full, _), (fast, _) = _update_both(objectives, [1.0] * 16, steps=1)
    _assert_same_weights(full, fast)
    # after a real step first, the momentum carries over into the all-inert step on both paths
    base = _model()
    mixed, inert = _batch(base, MIXED), _batch(base, [0.0] * 16)
    models = []
    for skip in (False, True):
        model = copy.deepcopy(base)
        parts = _parts(model, objectives, skip=skip)
        for batch in (mixed, inert):
            update_policy(parts, UpdateState(), batch, None, {"policy": 1.0})
        models.append(model)
    _assert_same_weights(*models)
    assert any(not torch.equal(p, q) for p, q in zip(models[1].parameters(), base.parameters()))


@pytest.mark.parametrize("objectives", [
    [("policy", {}), ("kl", {})],                          # KL pulls inert rows towards the reference
    [("policy", {}), ("entropy", {})],
    [("policy", {"entropy_mask_top": 0.2})],               # batch-wide entropy quantile
    [("policy", {"loss": "nft"})],
    [("policy", {"loss": "clip_cov"})],                    # batch covariance
])
def test_no_skip_when_an_objective_reads_inert_rows(objectives):
    parts = _parts(_model(), objectives, skip=True)
    assert not all(inert_at_zero_advantage(t.fn) for t in parts.terms if "rollout" in t.fn.needs)


def test_each_inert_loss_is_zero_with_zero_gradient_at_zero_advantage():
    """The property the marking claims, on random inputs: rows with A = 0 get no loss, no gradient,
    and the other rows' loss does not depend on them."""
    torch.manual_seed(0)
    n, t = 6, 5
    mask = (torch.rand(n, t) > 0.2).float()
    old = -torch.rand(n, t)
    adv = torch.randn(n, 1).expand(n, t).clone() * mask
    adv[::2] = 0.0
    marked = [k for k in POLICY_LOSSES.names() if POLICY_LOSSES.mark(k, "inert_at_zero_advantage", False)]
    assert sorted(marked) == sorted(INERT)
    for name in marked:
        logp = (old + 0.3 * torch.randn(n, t)).requires_grad_()
        per_token, _ = POLICY_LOSSES.get(name)(logp, old, adv, mask)
        assert torch.equal((per_token * mask)[::2], torch.zeros_like(per_token[::2])), name
        (per_token * mask).sum().backward()
        assert torch.equal(logp.grad[::2], torch.zeros_like(logp.grad[::2])), name
        other = logp.detach().clone()
        other[::2] = 0.0  # what the update puts there: any value
        again, _ = POLICY_LOSSES.get(name)(other, old, adv, mask)
        assert torch.allclose((again * mask)[1::2], (per_token * mask)[1::2].detach()), name


def test_user_losses_are_not_skipped_unless_marked():
    reg_before = dict(POLICY_LOSSES._items)
    try:
        POLICY_LOSSES.register("test_user_loss")(lambda logp, old_logp, advantages, mask: (-advantages * logp, {}))
        fn = OBJECTIVES.bind("policy", {"loss": "test_user_loss"})
        assert not inert_at_zero_advantage(fn)
    finally:
        POLICY_LOSSES._items.clear()
        POLICY_LOSSES._items.update(reg_before)


@pytest.mark.parametrize("skip", [True, False])
def test_config_switch_reaches_the_update(tmp_path, skip):
    """`stages[].rl.skip_inert_rows` in a recipe decides whether a real run skips rows."""
    import json
    from pathlib import Path

    import yaml

    from rftkit.config import validate
    from rftkit.train.loop import train

    tree = yaml.safe_load((Path(__file__).parent / "fixtures" / "tiny.yaml").read_text())
    tree.update(out_dir=str(tmp_path), progress=False)
    tree["stages"] = [{"name": "rl", "steps": 2, "batch_size": 8, "rl": {"skip_inert_rows": skip},
                       "objectives": [{"name": "policy"}]}]
    tree["eval"] = {"n_samples": 1, "ks": [1], "splits": ["test"]}
    run = train(validate(tree, "skip-switch"))
    steps = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines() if "loss/total" in x]
    skipped = [r["perf/inert_rows_skipped"] for r in steps]
    assert len(skipped) == 2
    assert (max(skipped) > 0) if skip else skipped == [0.0, 0.0]  # an untrained model fails whole groups
