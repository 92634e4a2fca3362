"""Benchmark workers; each runs in its own subprocess (`bench.py --worker NAME`) and returns a dict.

Workers: grpo_rftkit, grpo_trl, sft_rftkit, sft_trl, engine, learn_*, gpu. Each reports its own
peak RSS. The GRPO workers and the engine pair take `device` (default cpu) and dtype settings,
so the GPU part (`gpu.py`) runs the same code.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import gpu  # noqa: E402
import learn  # noqa: E402

PHASES = ("time/rollout", "time/reward", "time/update")


# --- rftkit ----------------------------------------------------------------------------------------


def _rftkit_tree(a: dict, name: str, steps: int, stage: dict) -> dict:
    return {
        "seed": a.get("seed", 0), "out_dir": a["workdir"], "name": name, "progress": False,
        "model": {"path": a["model"], "dtype": a.get("dtype", "float32"), "device": a.get("device", "cpu"),
                  "chat_template": False},
        "data": {"tasks": [{"name": "addsum"}], "train_size": 4000, "test_size": 32, "ood_size": 0},
        "rollout": {"engine": "kv", "group_size": 8, "max_new_tokens": a.get("new_tokens", 8), "temperature": 1.0},
        "optim": {"lr": a["lr"], "weight_decay": 0.0, "betas": [0.9, 0.95], "grad_clip": 1.0},
        "stages": [{"name": stage["name"], "steps": steps, "batch_size": stage["batch_size"], "lr": a["lr"],
                    "update_epochs": 1, "minibatches": 1, **stage["extra"]}],
        "eval": {"n_samples": 1, "ks": [1], "splits": ["test"]},
        "checkpoint": {"every": 10 ** 6, "keep": 1},
    }


def _run_rftkit(tree: dict) -> list[dict]:
    import shutil

    from rftkit.config import validate
    from rftkit.train.loop import train

    import addsum_task  # noqa: F401  registers the "addsum" task and verifier

    cfg = validate(tree, "<bench>")
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    run = train(cfg)
    stage = tree["stages"][0]["name"]
    return [r for r in map(json.loads, (run.dir / "metrics.jsonl").read_text().splitlines())
            if r.get("stage") == stage and "time" in r and "eval/test/greedy_acc" not in r
            and not any(k.startswith("eval/") for k in r)]


def _step_times(records: list[dict], warm: int) -> list[float]:
    times = [r["time"] for r in records]
    return [t1 - t0 for t0, t1 in zip(times[warm - 1:], times[warm:])] if warm >= 1 else times


def grpo_rftkit(a: dict) -> dict:
    steps, warm = a["steps"], a["warmup"]
    tree = _rftkit_tree(a, "grpo_rftkit", warm + steps, {
        "name": "rl", "batch_size": 16,
        "extra": {"advantage": {"name": "grpo"}, "rl": {"skip_inert_rows": a.get("skip_inert_rows", True)},
                  "objectives": [{"name": "policy", "params": {"loss": "ppo_clip", "agg": "token_mean"}}]}})
    t0 = time.perf_counter()
    recs = _run_rftkit(tree)
    timed = recs[warm:]
    st = _step_times(recs, warm)
    return {
        "framework": "rftkit", "step_times": st, "median_step_s": common.median(st),
        "gen_tokens": [r.get("perf/gen_tokens", 0) for r in timed],
        "rewards": [r.get("reward/mean") for r in recs],
        "phases": {k: common.median([r.get(k, 0.0) for r in timed]) for k in PHASES},
        "total_s": time.perf_counter() - t0,
    }


def sft_rftkit(a: dict) -> dict:
    steps, warm = a["steps"], a["warmup"]
    tree = _rftkit_tree(a, "sft_rftkit", warm + steps, {
        "name": "sft", "batch_size": 64, "extra": {"objectives": [{"name": "sft"}]}})
    recs = _run_rftkit(tree)
    st = _step_times(recs, warm)
    return {"framework": "rftkit", "step_times": st, "median_step_s": common.median(st),
            "samples_per_s": 64 * len(st) / sum(st), "losses": [r.get("loss/sft") for r in recs]}


# --- TRL -------------------------------------------------------------------------------------------


class _Timer:
    """TrainerCallback: wall time between step ends, and the logs of each step."""

    def __init__(self):
        from transformers import TrainerCallback

        outer = self

        class CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                outer.last = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                now = time.perf_counter()
                outer.steps.append(now - outer.last)
                outer.last = now

            def on_log(self, args, state, control, logs=None, **kw):
                outer.logs.append(dict(logs or {}))

        self.steps, self.logs, self.last, self.cb = [], [], 0.0, CB()


def _wrap_timer(obj, name: str, acc: list) -> None:
    fn = getattr(obj, name)

    def timed(*args, **kw):
        t = time.perf_counter()
        out = fn(*args, **kw)
        acc.append(time.perf_counter() - t)
        return out

    setattr(obj, name, timed)


def grpo_trl(a: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    steps, warm = a["steps"], a["warmup"]
    torch.manual_seed(a.get("seed", 0))
    tok = AutoTokenizer.from_pretrained(a["model"])
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
    rows = [{"prompt": p, "answer": ans} for p, ans in common.problems(16 * (steps + warm + 2), a.get("seed", 0) + 7)]
    cpu, mixed = a.get("device", "cpu") == "cpu", a.get("dtype", "float32") == "bf16-mixed"

    def reward_fn(prompts, completions, **kw):
        return [common.reward(p, c) for p, c in zip(prompts, completions)]

    cfg = GRPOConfig(
        output_dir=str(Path(a["workdir"]) / "grpo_trl"), per_device_train_batch_size=128, num_generations=8,
        gradient_accumulation_steps=1, max_completion_length=a.get("new_tokens", 8), learning_rate=a["lr"], beta=0.0,
        loss_type="dapo", num_iterations=1, scale_rewards="group", epsilon=0.2, temperature=1.0, top_k=0,
        top_p=1.0, gradient_checkpointing=False, bf16=mixed, fp16=False, use_cpu=cpu,
        lr_scheduler_type="constant", warmup_steps=0, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
        max_steps=warm + steps, logging_steps=1, report_to="none", save_strategy="no", seed=a.get("seed", 0),
        dataloader_num_workers=0, disable_tqdm=True, log_completions=False)
    timer = _Timer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, callbacks=[timer.cb])
    gen_t, rew_t = [], []
    _wrap_timer(trainer, "_generate", gen_t)
    _wrap_timer(trainer, "_calculate_rewards", rew_t)
    t0 = time.perf_counter()
    trainer.train()
    logs = [lg for lg in timer.logs if "reward" in lg]
    st = timer.steps[warm:]
    n = len(timer.steps)
    gen = common.median(gen_t[warm:n])
    rew = common.median(rew_t[warm:n])
    return {
        "framework": "trl", "step_times": st, "median_step_s": common.median(st),
        "gen_tokens": [lg.get("completions/mean_length", 0) * 128 for lg in logs[warm:]],
        "rewards": [lg.get("reward") for lg in logs],
        "phases": {"time/rollout": gen, "time/reward": rew,
                   "time/update": common.median(st) - gen - rew},
        "total_s": time.perf_counter() - t0, "loss_type": "dapo",
    }


def sft_trl(a: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    steps, warm = a["steps"], a["warmup"]
    tok = AutoTokenizer.from_pretrained(a["model"])
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
    problems = common.problems(64 * (steps + warm + 1), a.get("seed", 0) + 9)
    rows = [{"prompt": p, "completion": ans} for p, ans in problems]
    cfg = SFTConfig(
        output_dir=str(Path(a["workdir"]) / "sft_trl"), per_device_train_batch_size=64,
        gradient_accumulation_steps=1, learning_rate=a["lr"], lr_scheduler_type="constant", adam_beta2=0.95,
        weight_decay=0.0, max_grad_norm=1.0, max_steps=warm + steps, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, packing=False,
        completion_only_loss=True, dataloader_num_workers=0, disable_tqdm=True, seed=a.get("seed", 0))
    timer = _Timer()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         callbacks=[timer.cb])
    trainer.train()
    st = timer.steps[warm:]
    return {"framework": "trl", "step_times": st, "median_step_s": common.median(st),
            "samples_per_s": 64 * len(st) / sum(st), "losses": [lg.get("loss") for lg in timer.logs if "loss" in lg]}


# --- engine ----------------------------------------------------------------------------------------


def _time_engine(fn, reps: int, device: str = "cpu") -> tuple[float, int]:
    fn()  # warm-up
    best, toks = float("inf"), 0
    for _ in range(reps):
        common.sync(device)
        t = time.perf_counter()
        toks = fn()
        common.sync(device)
        best = min(best, time.perf_counter() - t)
    return best, toks


def engine_pair(path: str, dtype: str, n_prompts: int, new_tokens: int, reps: int, seed: int = 0,
                group: int = 1, device: str = "cpu") -> dict:
    """rftkit's KV engine vs model.generate on the same weights: tokens/s of generated tokens.
    group > 1: `group` samples per prompt (the RL layout; generate: num_return_sequences)."""
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer
    from rftkit.rollout.base import GENERATORS, SamplingParams

    policy = load_hf_policy(path, dtype=dtype, device=device)
    rtok = load_hf_tokenizer(path, chat_template=False)
    pairs = common.problems(n_prompts, seed + 3)
    prompts = [rtok.prompt_ids(p) for p, _ in pairs]
    engine = GENERATORS.bind("kv")(policy, rtok)
    params = SamplingParams(n=group, max_new_tokens=new_tokens, temperature=1.0, seed=seed)

    def ours() -> int:
        with torch.no_grad():
            return int(engine.generate(prompts, params).mask.sum())

    hf = policy.hf_model
    hf.eval()
    tok = rtok.hf
    enc = tok([p for p, _ in pairs], return_tensors="pt", padding=True).to(device)
    plen = enc["input_ids"].shape[1]

    def theirs() -> int:
        with torch.no_grad():
            out = hf.generate(**enc, max_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              num_return_sequences=group, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        gen = out[:, plen:]
        # generated tokens up to and including the first eos (what rftkit's mask counts)
        is_eos = (gen == tok.eos_token_id).int()
        after = (is_eos.cumsum(1) - is_eos) > 0
        return int((~after).sum())

    t_ours, n_ours = _time_engine(ours, reps, device)
    t_hf, n_hf = _time_engine(theirs, reps, device)
    params_n = common.n_params(hf)
    prompt_tokens = group * sum(len(p) for p in prompts)
    return {"dtype": dtype, "params": params_n, "prompts": n_prompts, "group": group, "new_tokens": new_tokens,
            "rftkit_tok_s": n_ours / t_ours, "generate_tok_s": n_hf / t_hf, "rftkit_tokens": n_ours,
            "generate_tokens": n_hf, "rftkit_s": t_ours, "generate_s": t_hf,
            "rftkit_gflops": 2 * params_n * (n_ours + prompt_tokens) / t_ours / 1e9,
            "generate_gflops": 2 * params_n * (n_hf + prompt_tokens) / t_hf / 1e9}


def train_step_rate(path: str, dtype: str, batch: int = 128, seq: int = 13, reps: int = 3,
                    device: str = "cpu") -> dict:
    """Forward+backward+AdamW step of the policy on [batch, seq] tokens: GFLOP/s at 6 x params x tokens."""
    from rftkit.model.hf import load_hf_policy

    policy = load_hf_policy(path, dtype=dtype, device=device)
    policy.train()
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-5)
    ids = torch.randint(4, 40, (batch, seq), device=device)

    def step():
        logits = policy(ids)
        loss = logits.float().logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    best = float("inf")
    for _ in range(reps):
        common.sync(device)
        t = time.perf_counter()
        step()
        common.sync(device)
        best = min(best, time.perf_counter() - t)
    n = common.n_params(policy.hf_model)
    return {"dtype": dtype, "step_s": best, "gflops": 6 * n * batch * seq / best / 1e9}


def beside_ceiling(measure, dtype: str, mm_n: int, device: str = "cpu") -> dict:
    """`measure()` with the matmul ceiling taken right before and right after it (the larger of
    the two is the figure's `ceiling_gflops`): a ceiling measured once at the start drifts with
    the machine's load and clock, and a share of it could pass 100 %."""
    dt_ = getattr(torch, dtype)
    before = common.matmul_ceiling(dt_, mm_n, device=device)
    res = measure()
    res["ceiling_gflops"] = max(before, common.matmul_ceiling(dt_, mm_n, device=device))
    return res


def engine(a: dict) -> dict:
    reps, mm_n = a.get("reps", 3), a.get("mm_n", 2048)
    out = {"ceiling_gflops": {"float32": common.matmul_ceiling(torch.float32, mm_n),
                              "bfloat16": common.matmul_ceiling(torch.bfloat16, mm_n)},
           "tiny": engine_pair(a["model"], "float32", a["prompts"], 8, reps),
           "tiny_groups": engine_pair(a["model"], "float32", a["prompts"] // 8, 8, reps, group=8)}
    if a.get("big"):
        model, tok = common.build_model("25m", seed=1)
        big = common.save_folder(model, tok, Path(a["workdir"]) / "qwen2_25m")
        del model
        out["25m"] = {dt: beside_ceiling(lambda dt=dt: engine_pair(str(big), dt, a["prompts"], 8, reps), dt, mm_n)
                      for dt in ("float32", "bfloat16")}
        out["25m_train"] = {dt: beside_ceiling(lambda dt=dt: train_step_rate(str(big), dt, reps=reps), dt, mm_n)
                            for dt in ("float32", "bfloat16")}
    out["builtin_tiny"] = builtin_engine(a["prompts"], 8, reps)
    return out


def builtin_engine(n_prompts: int, new_tokens: int, reps: int) -> dict:
    """rftkit's built-in GPT of the same size ("micro", ~1.8M) through the same engine."""
    from rftkit.model.io import build_model
    from rftkit.model.tokenizer import CharTokenizer
    from rftkit.rollout.base import GENERATORS, SamplingParams

    tok = CharTokenizer()
    model = build_model("micro", 128, tok).eval()
    prompts = [[tok.bos_id] + tok.encode(p) for p, _ in common.problems(n_prompts, 3)]
    eng = GENERATORS.bind("kv")(model, tok)
    params = SamplingParams(n=1, max_new_tokens=new_tokens, temperature=1.0, seed=0)

    def ours() -> int:
        with torch.no_grad():
            return int(eng.generate(prompts, params).mask.sum())

    t, n = _time_engine(ours, reps)
    return {"params": sum(p.numel() for p in model.parameters()), "tok_s": n / t, "tokens": n}


WORKERS = {"grpo_rftkit": grpo_rftkit, "grpo_trl": grpo_trl, "sft_rftkit": sft_rftkit, "sft_trl": sft_trl,
           "engine": engine, "learn_rftkit": learn.learn_rftkit, "learn_trl": learn.learn_trl, "gpu": gpu.gpu}


def main(name: str, args_file: str, out_file: str) -> None:
    a = json.loads(Path(args_file).read_text())
    if a.get("threads"):
        torch.set_num_threads(a["threads"])
    t0 = time.perf_counter()
    res = WORKERS[name](a)
    res["worker_s"] = time.perf_counter() - t0
    res["peak_rss_mb"] = common.peak_rss_mb()
    res["load_end"] = common.loadavg()
    Path(out_file).write_text(json.dumps(res))
