"""Learning speed (docs/benchmarks.md): samples and training wall time until held-out greedy accuracy
first reaches a target, rftkit's default GRPO against TRL's GRPOTrainer at a given lr.

Both start from the same SFT warm start, train on the same prompt pool and are evaluated on
the same held-out problems (rftkit's `build_pools` for the `addsum` task: test problems are
never in the train pool), greedy, every `eval_every` steps; evaluation time is excluded from
the training wall time. 16 prompts x 8 samples per step and 8 new tokens on both sides.

rftkit runs "its default GRPO": the `rl` stage of a shipped recipe, read from the recipe file
(`--learn-recipe`, default `default`: the RL stage `rftkit run` trains; `grpo` is the
DeepSeekMath form with a k3 KL term).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

import common


def rl_stage(recipe: str) -> dict:
    """Advantage, objectives and lr of the `rl` stage of a shipped recipe, as its file says."""
    from rftkit.cli import recipe_path
    from rftkit.config import load_config

    stage = next(s for s in load_config(recipe_path(recipe)).stages if s.name == "rl")
    d = stage.model_dump()
    return {"advantage": d["advantage"], "objectives": d["objectives"], "lr": d["lr"]}


def _data(a: dict) -> dict:
    return {"tasks": [{"name": "addsum"}], "train_size": 4000, "test_size": a["heldout"], "ood_size": 0}


def _pools(a: dict):
    """The addsum train/test pools rftkit's loop builds for this config: (prompt, answer) pairs."""
    from rftkit.config import validate
    from rftkit.data.pool import build_pools
    from rftkit.train.build import task_specs

    import addsum_task  # noqa: F401  registers the task

    cfg = validate(_tree(a), "<learn pools>")
    d = cfg.data
    pools = build_pools(task_specs(cfg), d.train_size, d.test_size, d.ood_size, cfg.seed)
    return [(p.prompt, p.answer) for p in pools.train], [(p.prompt, p.answer) for p in pools.test]


def _tree(a: dict) -> dict:
    """The recipe's rl stage (`rl_stage`) at the benchmark's model, data, batch and length."""
    rl = rl_stage(a.get("recipe", "default"))
    return {
        "seed": a.get("seed", 0), "out_dir": a["workdir"], "name": "learn_rftkit", "progress": False,
        "model": {"path": a["model"], "dtype": "float32", "device": "cpu", "chat_template": False},
        "data": _data(a),
        "rollout": {"engine": "kv", "group_size": 8, "max_new_tokens": 8, "temperature": 1.0},
        "stages": [{"name": "rl", "steps": a["max_steps"], "batch_size": 16, **rl}],
        "eval": {"every": a["eval_every"], "n_samples": 1, "ks": [1], "splits": ["test"]},
        "checkpoint": {"every": 10 ** 6, "keep": 1},
    }


def _reached(curve: list[dict], target: float) -> dict | None:
    return next((p for p in curve if p["acc"] >= target), None)


def _summary(curve: list[dict], target: float, framework: str, lr: float) -> dict:
    hit = _reached(curve, target)
    return {"framework": framework, "lr": lr, "curve": curve, "target": target,
            "reached": hit is not None, "samples_to_target": hit["samples"] if hit else None,
            "train_s_to_target": hit["train_s"] if hit else None,
            "final_acc": curve[-1]["acc"] if curve else None}


def learn_rftkit(a: dict) -> dict:
    from rftkit.config import validate
    from rftkit.train.loop import train

    import addsum_task  # noqa: F401

    cfg = validate(_tree(a), "<learn>")
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    run = train(cfg)
    records = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    start = common.greedy_accuracy_on(a["model"], _pools(a)[1])
    curve, eval_s, last = [{"step": 0, "samples": 0, "train_s": 0.0, "acc": start}], 0.0, 0.0
    for r in records:
        if "eval/test/greedy_acc" in r:
            curve.append({"step": r["step"], "samples": r["step"] * 128, "train_s": last - eval_s,
                          "acc": r["eval/test/greedy_acc"]})
            eval_s += r.get("time/eval", 0.0)
        elif "loss/total" in r:
            last = r["time"]
    out = _summary(curve, a["target"], "rftkit", cfg.stages[0].lr)
    out["recipe"] = a.get("recipe", "default")
    out["inert_rows_skipped"] = [r.get("perf/inert_rows_skipped", 0.0) for r in records if "loss/total" in r]
    return out


def learn_trl(a: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(a.get("seed", 0))
    train_pairs, test_pairs = _pools(a)
    tok = AutoTokenizer.from_pretrained(a["model"])
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
    rows = [{"prompt": p} for p, _ in train_pairs]
    curve = [{"step": 0, "samples": 0, "train_s": 0.0, "acc": common.greedy_accuracy_on(model, test_pairs, tok)}]
    clock = {"t0": 0.0, "eval": 0.0}

    class Eval(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % a["eval_every"]:
                return
            t = time.perf_counter()
            acc = common.greedy_accuracy_on(model, test_pairs, tok)
            curve.append({"step": state.global_step, "samples": state.global_step * 128,
                          "train_s": t - clock["t0"] - clock["eval"], "acc": acc})
            clock["eval"] += time.perf_counter() - t
            model.train()
            control.should_training_stop = acc >= a["target"]

    def reward_fn(prompts, completions, **kw):
        return [common.reward(p, c) for p, c in zip(prompts, completions)]

    cfg = GRPOConfig(
        output_dir=str(Path(a["workdir"]) / f"learn_trl_{a['lr']}"), per_device_train_batch_size=128,
        num_generations=8, gradient_accumulation_steps=1, max_completion_length=8, learning_rate=a["lr"],
        beta=0.0, loss_type="dapo", num_iterations=1, scale_rewards="group", epsilon=0.2, temperature=1.0,
        top_k=0, top_p=1.0, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
        lr_scheduler_type="constant", warmup_steps=0, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
        max_steps=a["max_steps"], logging_steps=1, report_to="none", save_strategy="no", seed=a.get("seed", 0),
        dataloader_num_workers=0, disable_tqdm=True, log_completions=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, callbacks=[Eval()])
    trainer.train()
    return _summary(curve, a["target"], "trl", a["lr"])
