"""Issue 14's GPU benchmark: vLLM rollouts, rftkit's GRPO step on vLLM vs TRL's, learner MFU.

    python benchmarks/gpu_scaleout.py --out gpu_scaleout.json    # a CUDA machine with vllm (and trl)
    .venv-vllm/bin/python benchmarks/gpu_scaleout.py --smoke     # CPU, tiny model: checks the script

Model: benchmarks/common.py's random Qwen2 of the Qwen2.5-0.5B shape (hidden 896, 24 layers, 14
heads / 2 KV heads, vocabulary 151 936, tied: 494M params), saved in bf16. Prompts "a+b=" (7
tokens), temperature 1, no top-k / top-p; a random model never says eos in 151 936 tokens, so
every row runs to `--new-tokens`. Rows:

1. Rollout tokens/s: rftkit's vLLM engine (`VLLMEngine`, what `rollout.engine=vllm` runs; bf16;
   sleep mode off, no learner shares the GPU here) vs HF `model.generate` on the same bf16
   weights, same prompts, same new tokens. Layouts "rl" = 16 prompts x 8 (one GRPO step's
   rollouts), "distinct" = 128 x 1. Generated tokens up to eos, best of --reps rounds after a
   warm-up call, a round timing the two in turn (engines.py). Target: vLLM >= 5x generate.
2. GRPO step time: rftkit's `train` with `rollout.engine=vllm` (colocated: the engine sleeps
   while the learner trains) vs TRL `GRPOTrainer(use_vllm=True, vllm_mode="colocate",
   vllm_enable_sleep_mode=True)`, on workers.py's matched GRPO settings (16 prompts x 8,
   one update epoch, token-mean clipped loss, lr 1e-6, bf16 autocast over float32 weights on
   both sides; rftkit's zero-advantage skip off: a random model's rewards are all 0). Median
   step after --warmup steps. Target: rftkit <= TRL.
3. Learner MFU: forward + backward + AdamW on the GRPO batch, [16 x 8, 7 + new tokens] tokens
   (workers.train_step_rate): 6 x params x tokens / time / the bf16 matmul ceiling measured
   right beside it (8192^2). In bf16 weights and in bf16-mixed (what row 2 trains in).
   Target: >= 40 %.

Each part runs in its own interpreter (GPU memory, vLLM's and TRL's process-wide state) and
degrades on its own: a missing vLLM or TRL, a failure or a timeout becomes the row's text.
Without CUDA every row says "not measured (no CUDA device)". `--smoke` runs the same code on
CPU with the tiny Qwen2 (4 heads of 32, widths vLLM-CPU's kernels take), float32 for vLLM and
the GRPO step, small layouts: numbers that show the script works, not measurements.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import engines  # noqa: E402

# Settings per mode; --new-tokens / --steps / --warmup / --reps override them.
GPU = dict(size="0.5b", max_pos=512, device="cuda", gen_dtype="bfloat16", grpo_dtype="bf16-mixed",
           layouts={"rl": (16, 8), "distinct": (128, 1)}, prompts=16, group=8, new_tokens=128, reps=3,
           steps=5, warmup=2, mm_n=8192, lr=1e-6, timeout=300)
SMOKE = dict(size="tiny", max_pos=128, device="cpu", gen_dtype="float32", grpo_dtype="float32",
             layouts={"rl": (2, 4), "distinct": (8, 1)}, prompts=2, group=4, new_tokens=4, reps=1,
             steps=1, warmup=1, mm_n=256, lr=1e-6, timeout=300)
TARGETS = {"generate": 5.0, "grpo": 1.0, "mfu": 0.40}
NO_CUDA = "not measured (no CUDA device)"


def have(module: str) -> bool:
    """`module` is importable (a folder named like it on sys.path, e.g. tests/vllm, is a
    namespace package without origin: not the package)."""
    return getattr(importlib.util.find_spec(module), "origin", None) is not None


# --- the parts, each run in its own interpreter -------------------------------------------------


def part_generate(a: dict) -> dict:
    """Row 1: {layout: tokens/s of vLLM (when installed) and of HF generate, tokens, seconds}."""

    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer
    from rftkit.rollout.base import SamplingParams

    policy = load_hf_policy(a["model"], dtype=a["gen_dtype"], device=a["device"]).eval()
    tok = load_hf_tokenizer(a["model"], chat_template=False)
    texts = [q for q, _ in common.problems(max(p for p, _ in a["layouts"].values()), seed=3)]
    vllm = None
    if have("vllm"):
        from rftkit.rollout.vllm_engine import VLLMEngine

        vllm = VLLMEngine(policy, tok, sleep=False)
    out = {"vllm": "installed" if vllm else "not installed", "params": common.n_params(policy.hf_model)}
    for name, (n_prompts, group) in a["layouts"].items():
        params = SamplingParams(n=group, max_new_tokens=a["new_tokens"], temperature=1.0, seed=0)
        fns = {"generate": engines.hf_generate(policy, tok, texts[:n_prompts], group, a["new_tokens"])}
        if vllm:
            fns["vllm"] = engines.engine_call(vllm, [tok.prompt_ids(t) for t in texts[:n_prompts]], params)
        row = {"prompts": n_prompts, "group": group, "new_tokens": a["new_tokens"]}
        for eng, (s, n) in engines.best_times(fns, a["reps"]).items():
            row.update({f"{eng}_tok_s": n / s, f"{eng}_tokens": n, f"{eng}_s": s})
        out[name] = row
    if vllm:
        vllm.close()
    return out


def part_grpo_rftkit(a: dict) -> dict:
    """Row 2, rftkit: workers.py's GRPO run with `rollout.engine=vllm`; step times after warm-up."""
    import workers

    tree = workers._rftkit_tree({**a, "dtype": a["grpo_dtype"]}, "grpo_rftkit_vllm", a["warmup"] + a["steps"], {
        "name": "rl", "batch_size": a["prompts"],
        "extra": {"advantage": {"name": "grpo"}, "rl": {"skip_inert_rows": False},
                  "objectives": [{"name": "policy", "params": {"loss": "ppo_clip", "agg": "token_mean"}}]}})
    tree["rollout"].update(engine="vllm", group_size=a["group"])
    tree["data"]["test_size"] = a["prompts"]  # the stage-end evaluation is not timed: keep it short
    if a.get("threads"):
        tree["model"]["threads"] = a["threads"]
    recs = workers._run_rftkit(tree)
    timed, st = recs[a["warmup"]:], workers._step_times(recs, a["warmup"])
    return {"framework": "rftkit", "engine": "vllm", "step_times": st, "median_step_s": common.median(st),
            "steps": len(recs), "gen_tokens": [r.get("perf/gen_tokens", 0) for r in timed],
            "logprob_diff": [r.get("rollout/logprob_diff") for r in recs],
            "phases": {k: common.median([r.get(k, 0.0) for r in timed]) for k in workers.PHASES}}


def part_grpo_trl(a: dict) -> dict:
    """Row 2, TRL: workers.grpo_trl's settings with vLLM colocated (sleep mode, as rftkit's)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    import workers

    steps, warm, rows = a["steps"], a["warmup"], a["prompts"] * a["group"]
    torch.manual_seed(a.get("seed", 0))
    tok = AutoTokenizer.from_pretrained(a["model"])
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
    data = [{"prompt": p, "answer": s} for p, s in common.problems(a["prompts"] * (steps + warm + 2), 7)]
    cfg = GRPOConfig(
        output_dir=str(Path(a["workdir"]) / "grpo_trl_vllm"), per_device_train_batch_size=rows,
        num_generations=a["group"], gradient_accumulation_steps=1, max_completion_length=a["new_tokens"],
        learning_rate=a["lr"], beta=0.0, loss_type="dapo", num_iterations=1, scale_rewards="group", epsilon=0.2,
        temperature=1.0, top_k=0, top_p=1.0, gradient_checkpointing=False, bf16=a["grpo_dtype"] == "bf16-mixed",
        use_cpu=a["device"] == "cpu", lr_scheduler_type="constant", warmup_steps=0, adam_beta2=0.95,
        weight_decay=0.0, max_grad_norm=1.0, max_steps=warm + steps, logging_steps=1, report_to="none",
        save_strategy="no", seed=a.get("seed", 0), dataloader_num_workers=0, disable_tqdm=True,
        log_completions=False, use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        vllm_enable_sleep_mode=True)

    def addsum(prompts, completions, **kw):
        return [common.reward(p, c) for p, c in zip(prompts, completions)]

    timer = workers._Timer()
    trainer = GRPOTrainer(model=model, reward_funcs=addsum, args=cfg, train_dataset=Dataset.from_list(data),
                          processing_class=tok, callbacks=[timer.cb])
    gen_t: list[float] = []
    workers._wrap_timer(trainer, "_generate", gen_t)
    trainer.train()
    st = timer.steps[warm:]
    return {"framework": "trl", "engine": "vllm colocate", "step_times": st, "median_step_s": common.median(st),
            "steps": len(timer.steps), "phases": {"time/rollout": common.median(gen_t[warm:len(timer.steps)])}}


def part_learner(a: dict) -> dict:
    """Row 3: {dtype: fwd+bwd+AdamW step on the GRPO batch, GFLOP/s, ceiling, MFU}."""
    import workers

    out = {}
    for dtype in ("bfloat16", "bf16-mixed"):
        r = workers.beside_ceiling(
            lambda dtype=dtype: workers.train_step_rate(a["model"], dtype, batch=a["prompts"] * a["group"],
                                                        seq=7 + a["new_tokens"], reps=a["reps"], device=a["device"]),
            "bfloat16", a["mm_n"], a["device"])
        out[dtype] = {**r, "batch": a["prompts"] * a["group"], "seq": 7 + a["new_tokens"],
                      "mfu": r["gflops"] / r["ceiling_gflops"]}
        if a["device"] == "cuda":
            torch.cuda.empty_cache()
    return out


PARTS = {"generate": part_generate, "grpo_rftkit": part_grpo_rftkit, "grpo_trl": part_grpo_trl,
         "learner": part_learner}


def run_part(name: str, a: dict) -> dict:
    """PARTS[name](a) in a fresh interpreter; its result, or {"error": why} (a failure, a timeout)."""
    wd = Path(a["workdir"])
    af, of = wd / f"{name}.args.json", wd / f"{name}.result.json"
    af.write_text(json.dumps(a))
    of.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--part", name, str(af), str(of)], capture_output=True,
                              text=True, timeout=a["timeout"],
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {a['timeout']} s"}
    if proc.returncode != 0 or not of.is_file():
        return {"error": f"failed (rc {proc.returncode}): {proc.stderr[-3000:]}"}
    return {**json.loads(of.read_text()), "wall_s": time.perf_counter() - t0}


def part_main(name: str, args_file: str, out_file: str) -> None:
    """Entry of a part's interpreter (`--part NAME ARGS OUT`)."""
    a = json.loads(Path(args_file).read_text())
    if a.get("threads"):
        torch.set_num_threads(a["threads"])
    try:
        res = PARTS[name](a)
    except Exception:
        res = {"error": traceback.format_exc()[-3000:]}
    Path(out_file).write_text(json.dumps({**res, "peak_rss_mb": common.peak_rss_mb()}))


# --- the run and its table ------------------------------------------------------------------------


def run(o: argparse.Namespace) -> dict:
    """Build and save the model, run the parts whose dependencies are there, collect the results."""
    mode = "smoke" if o.smoke else "cuda" if torch.cuda.is_available() else "none"
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv), "mode": mode}
    if mode == "none":
        return out
    s = {**(SMOKE if o.smoke else GPU), **{k: v for k, v in vars(o).items() if k in GPU and v is not None}}
    workdir = Path(o.workdir or tempfile.mkdtemp(prefix="rftkit_gpu_scaleout_"))
    workdir.mkdir(parents=True, exist_ok=True)
    model, tok = common.build_model(s["size"], seed=2, max_pos=s["max_pos"])
    folder = common.save_folder(model.to(torch.bfloat16) if mode == "cuda" else model, tok,
                                workdir / f"qwen2_{s['size']}")
    del model
    a = {**s, "model": str(folder), "workdir": str(workdir), "threads": o.threads, "seed": 0}
    out |= {"settings": {k: v for k, v in a.items() if k not in ("model", "workdir")}, "workdir": str(workdir),
            "device": torch.cuda.get_device_name() if mode == "cuda" else f"cpu ({common.cpu_model()})",
            "torch": torch.__version__, "vllm": have("vllm"), "trl": have("trl")}
    no_vllm = {"error": "not measured (vLLM not installed)"}
    out["generate"] = run_part("generate", a)
    out["grpo"] = {"rftkit": run_part("grpo_rftkit", a) if have("vllm") else no_vllm,
                   "trl": (run_part("grpo_trl", a) if have("trl") else {"error": "not measured (trl not installed)"})
                   if have("vllm") else no_vllm}
    out["learner"] = run_part("learner", a)
    return out


def _verdict(mode: str, value: float, target: float, higher: bool) -> str:
    if mode != "cuda":
        return "CPU smoke, not a measurement"
    met = value >= target if higher else value <= target
    return f"{'met' if met else 'NOT met'} ({'>=' if higher else '<='} {target:g})"


def _why(res: dict) -> str:
    """A failed part's row text: its error's last line."""
    lines = [x for x in str(res.get("error", "")).strip().splitlines() if x.strip()]
    text = lines[-1].strip() if lines else "no result"
    return text if text.startswith("not measured") else f"failed: {text[:160]}"


def rows(res: dict) -> list[tuple[str, str, str, str, str]]:
    """(row, measured, reference, ratio, target) per line of the table."""
    mode = res["mode"]
    if mode == "none":
        return [(r, NO_CUDA, "", "", "") for r in ("1. rollout tok/s", "2. GRPO step", "3. learner MFU")]
    out, g = [], res["generate"]
    for name in res["settings"]["layouts"]:
        label = f"1. rollout tok/s, {name} ({g[name]['prompts']}x{g[name]['group']})" if name in g else \
            "1. rollout tok/s"
        if name not in g:
            out.append((label, _why(g), "", "", ""))
            break
        r, ref = g[name], f"generate {g[name]['generate_tok_s']:,.0f}"
        if "vllm_tok_s" not in r:
            out.append((label, "vLLM not measured (vLLM not installed)", ref, "", ""))
            continue
        x = r["vllm_tok_s"] / r["generate_tok_s"]
        out.append((label, f"vLLM {r['vllm_tok_s']:,.0f}", ref, f"{x:.2f}x", _verdict(mode, x, TARGETS["generate"],
                                                                                        True)))
    ours, trl = res["grpo"]["rftkit"], res["grpo"]["trl"]
    label = "2. GRPO step (s), rftkit+vLLM vs TRL+vLLM colocate"
    if "median_step_s" not in ours:
        out.append((label, _why(ours), "", "", ""))
    elif "median_step_s" not in trl:
        out.append((label, f"rftkit {ours['median_step_s']:.3f}", f"TRL {_why(trl)}", "", ""))
    else:
        x = ours["median_step_s"] / trl["median_step_s"]
        out.append((label, f"rftkit {ours['median_step_s']:.3f}", f"TRL {trl['median_step_s']:.3f}",
                    f"{x:.2f}x of TRL", _verdict(mode, x, TARGETS["grpo"], False)))
    lr = res["learner"]
    for dtype in ("bfloat16", "bf16-mixed"):
        if dtype not in lr:
            out.append(("3. learner MFU", _why(lr), "", "", ""))
            break
        r = lr[dtype]
        out.append((f"3. learner MFU, {dtype}, [{r['batch']}, {r['seq']}]", f"{100 * r['mfu']:.1f}%",
                    f"{r['gflops']:,.0f} of {r['ceiling_gflops']:,.0f} GFLOP/s", "",
                    _verdict(mode, r["mfu"], TARGETS["mfu"], True)))
    return out


def table(res: dict) -> str:
    """The markdown table, under a line naming the machine and the settings."""
    head = "GPU scale-out (issue 14): " + (NO_CUDA if res["mode"] == "none" else (
        f"{res['device']}, Qwen2 {res['settings']['size']}, {res['settings']['new_tokens']} new tokens, "
        f"torch {res['torch']}" + (" -- CPU smoke, not a measurement" if res["mode"] == "smoke" else "")))
    lines = [head, "", "| row | measured | reference | ratio | target |", "|---|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows(res)])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, small layouts (not a measurement)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--workdir", default=None, help="model folder and run dirs (default: a new temp dir)")
    p.add_argument("--new-tokens", dest="new_tokens", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed GRPO steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--reps", type=int, default=None, help="timed rounds of rows 1 and 3 (best is kept)")
    p.add_argument("--timeout", type=int, default=None, help="seconds one part may run")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each part (0 = torch's default)")
    p.add_argument("--part", nargs=3, metavar=("NAME", "ARGS", "OUT"), help=argparse.SUPPRESS)
    o = p.parse_args(argv)
    if o.part:
        part_main(*o.part)
        return {}
    res = run(o)
    print(table(res))
    if o.out:
        o.out.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
