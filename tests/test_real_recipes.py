"""The real-workload recipes (gsm8k_grpo, math_dapo, code_grpo) through the real loop, and the
ProRL reference reset with LoRA.

Each recipe runs as shipped except for sizes, on a tiny random-weight Qwen2 saved to a temp dir
(tests/hf_fixtures.py) and a few rows written here in the dataset's own layout (GSM8K `####`
answers, MATH `\\boxed{}` solutions, MBPP `test_list` asserts). A random model scores 0, so these
tests check the wiring (every configured reward component logged, no reward errors, the sandbox
really run), not learning. tests/test_recipes.py skips these recipes and points here.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from typer.testing import CliRunner

from rftkit.cli import app
from rftkit.config import load_config
from rftkit.model.export import (
    checkpoint_tensors,
    load_checkpoint_tensors,
    load_hf_model,
)
from rftkit.model.hf import (
    BaseModelView,
    check_foldable,
    fold_adapters_into_base,
    load_hf_policy,
)
from rftkit.model.hf_tokenizer import load_hf_tokenizer
from rftkit.recipe_base import load_recipe
from rftkit.train.build import check_names
from rftkit.train.loop import train

from hf_fixtures import tiny_hf_model

RECIPES = Path(__file__).parents[1] / "rftkit" / "recipes"
GSM8K = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have now?",
          "answer": f"He has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
         for a, b in [(3, 4), (10, 5), (7, 8), (12, 30), (2, 9)]]
MATH = [{"problem": f"Simplify $\\frac{{{2 * a}}}{{{2 * b}}}$.", "level": "Level 1", "type": "Prealgebra",
         "solution": f"Divide both by 2: $\\frac{{{2 * a}}}{{{2 * b}}} = \\boxed{{\\frac{{{a}}}{{{b}}}}}$."}
        for a, b in [(1, 2), (3, 4), (2, 5), (5, 7), (4, 9)]]
MBPP = [{"task_id": i, "text": f"Write a function to add {i} to a number.",
         "code": f"def add_{i}(x):\n    return x + {i}",
         "test_list": [f"assert add_{i}(1) == {1 + i}", f"assert add_{i}(0) == {i}"], "test_setup_code": ""}
        for i in range(5)]
ROWS = {"gsm8k_grpo": GSM8K, "math_dapo": MATH, "code_grpo": MBPP}
SMALL = ["progress=false", "stages.0.steps=2", "stages.0.batch_size=2", "rollout.group_size=2",
         "rollout.max_new_tokens=8", "eval.n_samples=2", "eval.ks=[1,2]", "eval.every=0", "data.test_size=2",
         "optim.grad_accum=2", "reward.workers=1"]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    return tiny_hf_model(tmp_path_factory.mktemp("qwen2"), "qwen2", max_pos=1024)


def _data(tmp_path: Path, rows: list[dict]) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    train_f, test_f = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train_f.write_text("".join(json.dumps(r) + "\n" for r in rows[2:]))
    test_f.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    return train_f, test_f


def _run(recipe: str, qwen: Path, tmp_path: Path, extra: list[str] = ()):
    """`rftkit run <recipe> model.path=... data.tasks.0.params.path=...` minus the CLI's report."""
    train_f, test_f = _data(tmp_path, ROWS[recipe])
    overrides = [f"out_dir={tmp_path / 'runs'}", f"model.path={qwen}", f"data.tasks.0.params.path={train_f}",
                 f"data.tasks.0.params.test_path={test_f}", *SMALL, *extra]
    cfg = load_config(RECIPES / f"{recipe}.yaml", overrides)
    check_names(cfg)
    run = train(cfg)
    steps = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert (run.dir / "eval" / "rl.json").is_file() and (run.dir / "models" / "rl" / "model.json").is_file()
    return run, [r for r in steps if r.get("stage") == "rl" and "optim/lr" in r]


def _totals(cfg, problems, completions) -> list[float]:
    """The recipe's configured reward (weights, gates) on chosen completions, every component
    inline here (no worker pool to start): does the recipe pay for a right answer?"""
    from rftkit.rewards import Component, RewardRunner, RewardSpec

    r = cfg.reward
    spec = RewardSpec(tuple(Component(c.name, verifier=c.verifier, weight=c.weight, gate=c.gate, isolation="inline",
                                      params=c.params) for c in r.components),
                      primary=r.primary, gate_penalty=r.gate_penalty)
    with RewardRunner(spec) as runner:
        verdicts, metrics = runner.score(problems, completions)
    assert metrics["reward/errors"] == 0
    return [round(v.reward, 6) for v in verdicts]


def _eval_reasons(run) -> list[str]:
    records = [json.loads(line) for line in (run.dir / "eval" / "rl_test.jsonl").read_text().splitlines()]
    return [s["reason"] for r in records for s in [r["greedy"], *r["samples"]]]


def test_every_hf_recipe_is_covered_here():
    with_model = {p.stem for p in RECIPES.glob("*.yaml") if (load_recipe(p).get("model") or {}).get("path")}
    assert with_model == set(ROWS)


@pytest.mark.parametrize("recipe", sorted(ROWS))
def test_placeholder_paths_fail_naming_the_keys(recipe, tmp_path):
    result = CliRunner().invoke(app, ["run", recipe, f"out_dir={tmp_path}"])
    assert result.exit_code == 2
    cfg = load_config(RECIPES / f"{recipe}.yaml")
    for key, value in [("model.path", cfg.model.path), ("data.tasks.0.params.path", cfg.data.tasks[0].params["path"]),
                       ("data.tasks.0.params.test_path", cfg.data.tasks[0].params["test_path"])]:
        assert f"{key}: '{value}' does not exist" in result.output
    assert not any(tmp_path.iterdir())  # nothing was created before the check


def test_gsm8k_grpo_runs(qwen, tmp_path):
    run, steps = _run("gsm8k_grpo", qwen, tmp_path)
    assert len(steps) == 2
    for r in steps:
        assert r["reward/errors"] == 0 and r["reward/timeouts"] == 0
        assert {"reward/correct/mean", "reward/mean", "loss/policy", "policy/kl", "rollout/logprob_diff"} <= set(r)
    assert all(reason.startswith("expected") or reason == "no number found" for reason in _eval_reasons(run))
    p = run.pools.test[0]  # Tom has 3 apples and buys 4 more
    assert p.answer.endswith("#### 7") and "step by step" in run.tok.hf.decode(run.tok.prompt_ids(p.prompt))
    completions = ["3 + 4 = 7.\n#### 7", "So \\boxed{7}.", "The answer is 7.", "#### 8"]
    assert _totals(run.cfg, [p] * 4, completions) == [1, 1, 1, 0]


def test_math_dapo_runs(qwen, tmp_path):
    run, steps = _run("math_dapo", qwen, tmp_path, ["stages.rl.rollout.rewards.dapo_overlong.params.cache=4"])
    assert len(steps) == 2
    for r in steps:
        assert r["reward/errors"] == 0 and r["reward/timeouts"] == 0  # math-verify answered in its workers
        assert {"reward/correct/mean", "reward/format/mean"} <= set(r)
        assert "rollout/refill_rounds" in r  # dynamic sampling: all-equal groups dropped, batch refilled
    assert all(s == "no parsable answer" or s.startswith("expected") for s in _eval_reasons(run))  # gold parsed
    p = run.pools.test[0]  # Simplify 2/4
    good = "<think>Divide both by 2.</think>\n<answer>\\boxed{\\frac{1}{2}}</answer>"
    assert _totals(run.cfg, [p] * 4, [good, "<think>Hm.</think><answer>0.5</answer>", "\\boxed{\\frac{1}{2}}",
                                      "<think>Hm.</think><answer>2</answer>"]) == [1.1, 1.1, 0.0, 0.1]  # format gate


def test_code_grpo_runs_the_tests_in_the_sandbox(qwen, tmp_path, monkeypatch):
    from rftkit.rewards import code

    results = []

    def spy(program, tests, limits, setup=""):
        res = real(program, tests, limits, setup=setup)
        results.append((tests, res))
        return res

    real = code.run_tests
    monkeypatch.setattr(code, "run_tests", spy)  # the runner calls it on threads of this process
    run, steps = _run("code_grpo", qwen, tmp_path)
    assert len(steps) == 2
    for r in steps:
        assert r["reward/errors"] == 0 and r["reward/timeouts"] == 0 and "reward/tests/mean" in r
    assert len(results) >= 2 * 2 * 2  # steps x prompts x group, plus the evaluations
    assert all(len(tests) == 2 and tests[0].startswith("assert add_") for tests, _ in results)  # meta.tests mapping
    assert all(res.exit_code is not None or res.killed for _, res in results)  # a program really ran
    assert all("/2 tests passed" in reason for reason in _eval_reasons(run))
    p = run.pools.test[0]  # add_0
    assert "assert add_0(1) == 1" in p.prompt  # the template shows the tests
    right, half = "```python\ndef add_0(x):\n    return x\n```", "```python\ndef add_0(x):\n    return 0\n```"
    assert _totals(run.cfg, [p] * 3, [right, half, "def add_0(x): return x +"]) == [1.0, 0.5, 0.0]


# --- ProRL reference reset with LoRA -------------------------------------------------------


def _trained_lora(qwen: Path, dtype=torch.float32):
    policy = load_hf_policy(qwen, device="cpu", dtype=dtype, lora={"r": 4})
    tok = load_hf_tokenizer(qwen)
    ids = torch.tensor([tok.prompt_ids("Tom has 3 apples and buys 4 more. Let's think step by step.")])
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=3e-2)
    for _ in range(3):
        loss = -policy(ids[:, :-1]).log_softmax(-1).gather(-1, ids[:, 1:, None]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return policy.eval(), ids, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_keeps_the_policy_and_makes_the_reference_equal_to_it(qwen, dtype):
    policy, ids, opt = _trained_lora(qwen, dtype)
    with torch.no_grad():
        before, ref_before = policy(ids), BaseModelView(policy)(ids)
    assert (before - ref_before).abs().max() > 1.0  # the adapters moved the policy away from the base
    params = fold_adapters_into_base(policy)
    with torch.no_grad():
        after, ref_after = policy(ids), BaseModelView(policy)(ids)
    # float32: W + s*B@A is rounded once, then multiplied in a different order (measured 1.3e-5 on
    # logits of magnitude 8, i.e. 1.6e-6 relative); float64 shows the identity itself.
    tol = 1e-5 * before.abs().max() if dtype == torch.float32 else 1e-10
    assert (after - before).abs().max() <= tol
    assert torch.equal(ref_after, after)  # B = 0 adds exact zeros: the reference is the policy
    assert params and {id(p) for p in params} == {id(p) for p in opt.state}  # the adapters, for the optimizer reset
    assert all(p.abs().max() == 0 for n, p in policy.named_parameters() if "lora_B" in n)
    fresh = load_hf_policy(qwen, device="cpu", dtype=dtype, lora={"r": 4})
    load_checkpoint_tensors(fresh, checkpoint_tensors(policy))  # the folded base travels in checkpoints
    with torch.no_grad():
        assert fresh.base_modified and torch.equal(fresh.eval()(ids), after)
    dora = load_hf_policy(qwen, device="cpu", lora={"r": 4, "use_dora": True})
    with pytest.raises(ValueError, match="not DoRA"):
        check_foldable(dora)


@pytest.mark.parametrize("lora", ["{r: 4}", "null"], ids=["lora", "full"])
def test_ref_reset_in_the_loop_is_exact_across_resume(qwen, tmp_path, lora):
    """Reset every 2 steps of 4; the KL to the reference is 0 right after a reset; a run resumed
    from the checkpoint after the first reset ends with the same records and the same policy.
    (Full fine-tuning: the reference is a tied-embedding HF copy saved in the checkpoint.)"""
    extra = [f"model.lora={lora}", "model.dtype=float32", "optim.lr=0.02", "stages.0.steps=4",
             "stages.0.rl.ref_reset_every=2", "checkpoint.every=1", "checkpoint.keep=10",
             ("reward.components=[{name: correct, verifier: numeric},"
              " {name: sim, verifier: similarity, params: {on_answer: false}}]")]  # graded: the adapters move
    run, steps = _run("gsm8k_grpo", qwen, tmp_path / "a", extra)
    assert [r.get("policy/ref_reset", 0.0) for r in steps] == [0.0, 1.0, 0.0, 1.0]
    kl = [r["policy/kl"] for r in steps]
    assert kl[1] > 1e-4 and abs(kl[2]) < 1e-7, kl  # step 3 starts from policy == reference
    if lora != "null":
        assert json.loads((run.dir / "models" / "rl" / "model.json").read_text())["base_weights"]
    else:
        assert (run.dir / "checkpoints" / "step_000003" / "ref.safetensors").is_file()
    b_dir = tmp_path / "b" / "runs"
    shutil.copytree(run.dir, b_dir / run.dir.name)
    (b_dir / run.dir.name / "checkpoints" / "latest").write_text("step_000003")  # as if killed after step 3
    cfg = run.cfg.model_copy(update={"out_dir": str(b_dir)})
    resumed = train(cfg, resume=True)
    strip = [{k: v for k, v in json.loads(line).items() if k != "time" and not k.startswith(("time/", "perf/"))}
             for line in (resumed.dir / "metrics.jsonl").read_text().splitlines()]
    want = [{k: v for k, v in json.loads(line).items() if k != "time" and not k.startswith(("time/", "perf/"))}
            for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert strip == want
    (a, tok), (b, _) = load_hf_model(run.dir / "models" / "rl", device="cpu"), \
        load_hf_model(resumed.dir / "models" / "rl", device="cpu")
    ids = torch.tensor([tok.prompt_ids(GSM8K[0]["question"])])
    with torch.no_grad():
        assert torch.equal(a.eval()(ids), b.eval()(ids))
