"""A learner group of 2 processes (gloo) updates exactly as one process on the same global
batch: the same loss and the same weights within 1e-6, for GRPO and for an SFT+RL hybrid,
under DDP and FSDP2 (both run on CPU with torch 2.13). The learners run the real
`Learner` class (dist/learners.py) in processes started by torch.multiprocessing, so these
tests need no Ray; tests/test_dist_run.py runs the group on Ray through the loop."""

import copy
import os

import pytest
import torch
import torch.multiprocessing as mp
from test_grad_accum import _batch, _demos, _model, _parts

from rftkit.dist.learner_group import merge_metrics
from rftkit.dist.learners import Learner, LearnerParts, free_port, trainable_state
from rftkit.train.update import UpdateState, update_policy

GRPO = [("policy", {"agg": "token_mean"})]
HYBRID = [("policy", {"agg": "seq_mean_token_mean"}), ("sft", {"agg": "token_mean"})]


def _setup(objectives, demos: bool, grad_accum: int, lr: float = 0.5):
    """SGD with momentum and weight decay, as test_grad_accum uses plain SGD: AdamW's first step
    moves each weight by about lr * sign(gradient), so a gradient at float rounding level
    (1e-9, where a different summation order flips its sign) moves by +-lr either way; that
    holds for one process with grad_accum 2 against 1 as much as for two learners."""
    base = _model()
    batch = _batch(base)
    model = copy.deepcopy(base)
    parts = _parts(model, objectives, grad_accum, 2, False)
    parts.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.01)
    parts.optimizer.param_groups[0]["lr_scale"] = 1.0
    parts.grad_clip, parts.scorer = 1.0, None
    return parts, batch, _demos() if demos else None


def _lparts(parts) -> LearnerParts:
    return LearnerParts(model=parts.model, ref_model=None, critic=None, scorer=None, optimizer=parts.optimizer,
                        terms=parts.terms, needs=parts.needs, sampling=parts.sampling, update_epochs=1,
                        minibatches=parts.minibatches, grad_accum=parts.grad_accum, grad_clip=parts.grad_clip,
                        skip_inert_rows=False)


def _rank(rank: int, world: int, strategy: str, port: int, args: tuple, out: str) -> None:
    torch.set_num_threads(1)
    objectives, with_demos, grad_accum, steps, lr = args
    parts, batch, demos = _setup(objectives, with_demos, grad_accum, lr)  # seeded: the same on every rank
    learner = Learner(rank, world, strategy, threads=1, update_fn=update_policy)
    learner.join(f"tcp://127.0.0.1:{port}", "gloo", 60.0)
    learner.load(_lparts(parts))
    weights = {t.name: 1.0 for t in parts.terms}
    results = []
    for step in range(steps):
        metrics, state, tensors = learner.update(UpdateState(), batch, demos, weights, step, None, lr)
        results.append(metrics)
        learner.optimizer_state()  # what a checkpoint does between steps: must leave the moments as they are
    opt = learner.optimizer_state()
    learner.close()
    if rank == 0:
        torch.save({"metrics": results, "tensors": tensors, "opt": opt}, out)
    else:
        torch.save({"metrics": results}, out + f".{rank}")


def _group(tmp_path, strategy, objectives, demos=False, grad_accum=1, steps=2, world=2, lr=0.5):
    out = str(tmp_path / f"{strategy}.pt")
    args = (objectives, demos, grad_accum, steps, lr)
    mp.start_processes(_rank, args=(world, strategy, free_port(), args, out), nprocs=world, start_method="spawn")
    got = torch.load(out, weights_only=False)
    per_rank = [got["metrics"]] + [torch.load(out + f".{r}", weights_only=False)["metrics"] for r in range(1, world)]
    got["merged"] = [merge_metrics([rank[i] for rank in per_rank]) for i in range(steps)]
    return got


def _single(objectives, demos=False, grad_accum=1, steps=2, lr=0.5):
    parts, batch, d = _setup(objectives, demos, grad_accum, lr)
    metrics = [update_policy(parts, UpdateState(), batch, d, {t.name: 1.0 for t in parts.terms}, step)
               for step in range(steps)]
    return parts, metrics


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    yield
    torch.set_num_threads(old)


def _assert_same_update(single, group, loss_keys):
    parts, metrics = single
    want = trainable_state(parts)["model"]
    moved = False
    for k, t in group["tensors"]["model"].items():
        assert torch.allclose(t, want[k], atol=1e-6, rtol=0), (k, float((t - want[k]).abs().max()))
        moved |= not torch.equal(t, _model().state_dict()[k])
    assert moved
    for step, (m1, mg) in enumerate(zip(metrics, group["merged"])):
        for key in loss_keys:
            assert mg[key] == pytest.approx(m1[key], abs=1e-6), (step, key)
        assert mg["optim/grad_norm"] == pytest.approx(m1["optim/grad_norm"], abs=1e-5)
    # the moments a checkpoint pulls from rank 0 equal the single process's, full tensors
    opt = parts.optimizer.state_dict()["state"]
    for idx, s in group["opt"]["state"].items():
        assert torch.allclose(s["momentum_buffer"], opt[idx]["momentum_buffer"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_learners_equal_one_process_grpo(tmp_path, strategy):
    _assert_same_update(_single(GRPO), _group(tmp_path, strategy, GRPO), ["loss/total", "loss/policy"])


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_learners_equal_one_process_sft_rl_hybrid(tmp_path, strategy):
    """policy + sft in one step, 2 minibatches and grad_accum 2 (8 pieces over 2 ranks)."""
    single = _single(HYBRID, demos=True, grad_accum=2)
    group = _group(tmp_path, strategy, HYBRID, demos=True, grad_accum=2)
    _assert_same_update(single, group, ["loss/total", "loss/policy", "loss/sft"])
