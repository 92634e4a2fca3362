"""`rollout.engine=vllm` through the real loop: 5 GRPO steps on a tiny random HF Qwen2.

A random model answers nothing right, so the reward is a user function that differs between
samples (distinct characters, as tests/test_hf_preference.py does): this checks the wiring, not
learning. Every step's
metrics are finite, the engine's log-probs are compared with the trainer's every step
(`rollout/logprob_diff`, small because the weights reach vLLM after every optimizer step),
the weights move, and the stage-end evaluation (a second engine over the same model) runs.
"""

import json

from vllm_fixtures import qwen_policy

from rftkit.config import load_config
from rftkit.train.build import check_names
from rftkit.train.loop import train


def test_grpo_runs_five_steps_with_vllm_rollouts(qwen_dir, tmp_path):
    fn = tmp_path / "distinct.py"
    fn.write_text("def fn(prompts, completions, answers):\n    return [float(len(set(c))) for c in completions]\n")
    cfg = load_config(None, [
        f"out_dir={tmp_path / 'runs'}", f"model.path={qwen_dir}", "model.threads=1", "progress=false",
        "data.tasks=[{name: arithmetic, difficulty: [1, 1], params: {op: add}}]",
        "data.train_size=16", "data.test_size=2", "data.ood_size=0", "rollout.engine=vllm",
        "rollout.group_size=4", "rollout.max_new_tokens=8", "eval.n_samples=2", "eval.ks=[1,2]",
        "eval.splits=[test]", "reward.workers=1",
        f"reward.components=[{{name: distinct, fn: '{fn}:fn', isolation: inline}}]",
        "stages=[{name: rl, steps: 5, batch_size: 2, lr: 0.003, objectives: [{name: policy, "
        "params: {loss: ppo_clip}}, {name: kl, weight: 0.01, params: {estimator: k3}}]}]"],
        base={"stages": []})
    check_names(cfg)
    start, _ = qwen_policy(qwen_dir)
    run = train(cfg)
    rows = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert len(steps) == 5
    numbers = [v for r in steps for v in r.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert all(v == v and abs(v) != float("inf") for v in numbers)
    diffs = [r["rollout/logprob_diff"] for r in steps]
    assert len(diffs) == 5 and max(diffs) < 1e-4  # engine and trainer agree at every step ...
    assert steps[-1]["policy/kl"] > 0.01  # ... while the policy moves away from where it started
    moved = [(a - b).abs().max() for a, b in zip(start.parameters(), run.model.parameters())]
    assert max(moved) > 1e-4
    assert any(k.startswith("eval/") for r in rows for k in r)
