"""One-Token Rollout (`otr`, arXiv:2509.26313): hand-computed values on a 3-token vocabulary, the
gradient's direction and fixed point, its expectation, the mask, and determinism in and out of the loop."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rftkit.algos.hybrid_sft import otr_samples, otr_token_loss
from rftkit.algos.objectives import OBJECTIVES, LossInputs
from rftkit.config import validate
from rftkit.train.loop import train

A = pytest.approx
TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


def _one_position(z):
    """logits z [V] (a leaf) as the [1, 1, V] log-softmax OTR reads."""
    return torch.log_softmax(z, -1).view(1, 1, -1)


def test_hand_value_and_gradient_direction_on_three_tokens():
    z = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    samples = torch.tensor([[[0, 1, 1, 2]]])  # K = 4: one hit, three wrong draws
    loss, m = otr_token_loss(_one_position(z), torch.tensor([[0]]), torch.ones(1, 1), samples, wrong_reward=-0.5)
    lse = math.log(1 + math.e + math.exp(-1))
    lp0, lp1, lp2 = -lse, 1 - lse, -1 - lse
    assert loss.item() == A(-(1.0 * lp0 - 0.5 * lp1 - 0.5 * lp1 - 0.5 * lp2) / 4)
    assert m == A({"mix/otr_hit_rate": 0.25, "mix/otr_target_sampled": 1.0})
    (g,) = torch.autograd.grad(loss.sum(), z)
    pi = torch.softmax(z.detach(), -1)
    # d/dz of -(1/K) sum_j R_j log pi(a_j) = -(1/K) (sum_j R_j e_{a_j} - (sum_j R_j) pi), sum_j R_j = -0.5
    assert torch.allclose(g, -(torch.tensor([1.0, -1.0, -0.5]) + 0.5 * pi) / 4)
    after = torch.softmax(z.detach() - g, -1)  # one SGD step
    assert after[0] > pi[0] and after[1] < pi[1] and after[2] < pi[2]  # target up, sampled wrong ones down


def test_gradient_vanishes_when_the_policy_is_certain_of_the_target():
    z = torch.tensor([25.0, 0.0, 0.0], requires_grad=True)
    logp = _one_position(z)
    mask = torch.ones(1, 1)
    samples = otr_samples(logp, mask, k=64, temperature=1.3, generator=torch.Generator().manual_seed(0))
    assert samples.eq(0).all()
    loss, m = otr_token_loss(logp, torch.tensor([[0]]), mask, samples)
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert g.abs().max().item() < 1e-6 and m["mix/otr_hit_rate"] == 1.0


def test_expected_gradient_is_one_minus_beta_times_dft():
    # sum_a pi(a) R(a) grad log pi(a) = (1 - beta) p grad log p when the samples come from pi itself
    z = torch.tensor([0.2, -0.3, 0.5, 0.0], requires_grad=True)
    logp, mask, target = _one_position(z), torch.ones(1, 1), torch.tensor([[1]])
    samples = otr_samples(logp, mask, k=200_000, temperature=1.0, generator=torch.Generator().manual_seed(0))
    loss, _ = otr_token_loss(logp, target, mask, samples, wrong_reward=-0.5)
    (g_otr,) = torch.autograd.grad(loss.sum(), z)
    p = logp[0, 0, 1].detach().exp()
    (g_dft,) = torch.autograd.grad(-p * _one_position(z)[0, 0, 1], z)
    assert torch.allclose(g_otr, 1.5 * g_dft, atol=1e-2)


def test_temperature_flattens_the_sampling_policy():
    logp, mask = _one_position(torch.tensor([3.0, 0.0, 0.0])), torch.ones(1, 1)
    hits = [otr_token_loss(logp, torch.tensor([[0]]), mask,
                           otr_samples(logp, mask, k=4000, temperature=t, generator=torch.Generator().manual_seed(1))
                           )[1]["mix/otr_hit_rate"] for t in (1.0, 3.0)]
    p0 = math.e ** 3 / (math.e ** 3 + 2)
    assert hits[0] == A(p0, abs=0.03) and hits[1] == A(math.e / (math.e + 2), abs=0.03)


def test_knobs_are_validated():
    logp, mask = _one_position(torch.zeros(3)), torch.ones(1, 1)
    with pytest.raises(ValueError, match="wrong_reward"):
        otr_token_loss(logp, torch.tensor([[0]]), mask, torch.zeros(1, 1, 2, dtype=torch.long), wrong_reward=1.0)
    with pytest.raises(ValueError, match="k >= 1"):
        otr_samples(logp, mask, k=0, temperature=1.0)


def _demo_inputs(z, seed=7):
    """M = 2 demonstrations of T = 4 tokens; z [2, 3, 5] are the next-token logits of positions 1..3."""
    tokens = torch.tensor([[0, 1, 2, 3], [0, 4, 4, 1]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    return LossInputs(demo_next_logp=torch.log_softmax(z, -1), demo_tokens=tokens, demo_mask=mask,
                      demo_logp=torch.zeros(2, 4), seed=seed)


def test_objective_is_deterministic_under_a_seed_and_leaves_the_global_rng_alone():
    z = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    rng = torch.get_rng_state()
    runs = []
    for _ in range(2):
        value, m = OBJECTIVES.get("otr")(_demo_inputs(z), k=16)
        runs.append((value.item(), torch.autograd.grad(value, z)[0], m))
    assert torch.equal(torch.get_rng_state(), rng)
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1]) and runs[0][2] == runs[1][2]

    def draw(s):
        return otr_samples(torch.log_softmax(z, -1), torch.ones(2, 3), k=64, temperature=1.3,
                           generator=torch.Generator().manual_seed(s))

    assert torch.equal(draw(7), draw(7)) and not torch.equal(draw(7), draw(8))


def test_objective_trains_only_masked_positions():
    z = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    inp = _demo_inputs(z)
    value, m = OBJECTIVES.get("otr")(inp, k=16)
    (g,) = torch.autograd.grad(value, z)
    trained = inp.demo_mask[:, 1:] > 0  # [[1, 1, 0], [0, 1, 1]]: what each next-token row predicts
    assert g[~trained].abs().sum() == 0 and (g[trained].abs().sum(-1) > 0).all()
    # the same per-token losses by hand, token_mean over the 4 trained tokens
    samples = otr_samples(inp.demo_next_logp, inp.demo_mask[:, 1:], k=16, temperature=1.3,
                          generator=torch.Generator().manual_seed(7))
    per_token, _ = otr_token_loss(inp.demo_next_logp, inp.demo_tokens[:, 1:], inp.demo_mask[:, 1:], samples)
    assert value.item() == A(per_token.sum().item() / 4) and m["loss/otr"] == A(value.item())
    # logits at untrained positions change neither the samples nor the value
    z2 = z.detach().clone()
    z2[~trained] += 5.0
    assert OBJECTIVES.get("otr")(_demo_inputs(z2), k=16)[0].item() == A(value.item(), abs=0)


def _otr_run(out: Path) -> tuple[list[dict], dict]:
    tree = yaml.safe_load(TINY.read_text())
    tree.update(out_dir=str(out), seed=5)
    tree["optim"] = {"lr": 0.003, "grad_accum": 2}
    tree["eval"] = {"n_samples": 2, "ks": [1, 2]}
    tree["stages"] = [{"name": "otr", "steps": 3, "batch_size": 4,
                       "objectives": [{"name": "otr", "params": {"k": 16}}]}]
    run = train(validate(tree, "otr-test"))
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss/otr" in r], load_file(str(run.dir / "models" / "otr" / "model.safetensors"))


def test_the_loop_seeds_otr_from_the_step_so_runs_repeat_exactly(tmp_path):
    (a, wa), (b, wb) = _otr_run(tmp_path / "a"), _otr_run(tmp_path / "b")
    assert len(a) == 3 and all(0.0 < r["mix/otr_hit_rate"] < 1.0 for r in a)
    keys = ("loss/otr", "mix/otr_hit_rate", "mix/otr_target_sampled", "optim/grad_norm")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
