"""The GPU part of the benchmark (docs/benchmarks.md): a 0.5B-shaped random Qwen2 in bf16 on a CUDA device.

Rows, all on the same random weights:
- the GPU's measured bf16 matmul ceiling (8192^2 matmuls);
- rftkit's engine vs `model.generate`, tokens/s of generated tokens, bf16 weights, 128
  prompts, `new_tokens` (128) new tokens, sampling; MFU = 2 x params x (prompt + generated
  tokens) / time / ceiling;
- a forward + backward + AdamW step on [batch, 7 + new_tokens] tokens in bf16 weights;
  MFU = 6 x params x tokens / time / ceiling;
- a GRPO step of each framework, 16 prompts x 8, bf16 autocast over float32 weights on both
  sides (rftkit `dtype: bf16-mixed`, TRL `bf16=True`), the same settings as the CPU part
  otherwise. A random model's rewards are all 0, so rftkit's skip of zero-advantage rows is
  off here (`rl.skip_inert_rows: false`): both frameworks run the full update.

`bench.py` runs it when CUDA is available; otherwise its rows say "not measured".
`tests/test_benchmarks_smoke.py` runs the same code on CPU with the tiny model.
"""

from __future__ import annotations

from pathlib import Path

import torch

import common


def _device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({common.cpu_model()})"


def gpu(a: dict) -> dict:
    """Worker: build and save the model, measure the ceiling, the engine pair and a train step."""
    import workers  # imported here: workers imports this module

    device, size, new, reps = a.get("device", "cuda"), a.get("size", "0.5b"), a.get("new_tokens", 128), a.get("reps", 3)
    model, tok = common.build_model(size, seed=2, max_pos=a.get("max_pos", 512))
    params = common.n_params(model)
    path = common.save_folder(model.to(torch.bfloat16), tok, Path(a["workdir"]) / f"qwen2_{size}")
    del model
    mm_n = a.get("mm_n", 8192)
    eng = workers.beside_ceiling(lambda: workers.engine_pair(str(path), "bfloat16", a.get("prompts", 128), new, reps,
                                                             device=device), "bfloat16", mm_n, device)
    eng.update(rftkit_mfu=eng["rftkit_gflops"] / eng["ceiling_gflops"],
               generate_mfu=eng["generate_gflops"] / eng["ceiling_gflops"])
    train = workers.beside_ceiling(
        lambda: workers.train_step_rate(str(path), "bfloat16", batch=a.get("train_batch", 64), seq=7 + new, reps=reps,
                                        device=device),
        "bfloat16", mm_n, device)
    train["mfu"] = train["gflops"] / train["ceiling_gflops"]
    return {"device": _device_name(device), "size": size, "params": params, "model": str(path),
            "ceiling_bf16_gflops": max(eng["ceiling_gflops"], train["ceiling_gflops"]), "engine": eng, "train": train}


def run(run_worker, base: dict, workdir: Path, quick: bool, device: str = "cuda") -> dict:
    """The GPU part from bench.py: the `gpu` worker, then each framework's GRPO step on its model."""
    wd = Path(workdir) / "gpu"
    wd.mkdir(parents=True, exist_ok=True)
    a = {**base, "workdir": str(wd), "device": device, "reps": 1 if quick else 3,
         "new_tokens": 16 if quick else 128}
    out = run_worker("gpu", a, wd)
    if "error" in out:
        return out
    g = {**a, "model": out["model"], "dtype": "bf16-mixed", "skip_inert_rows": False, "lr": 1e-6,
         "steps": 3 if quick else 10, "warmup": 2}
    out["grpo"] = {"rftkit": run_worker("grpo_rftkit", g, wd)}
    if base.get("have_trl"):
        out["grpo"]["trl"] = run_worker("grpo_trl", g, wd)
    return out


def _mfu(x: float) -> str:
    """A share of the ceiling measured next to the figure; above 1 the ceiling was underestimated."""
    return f"{100 * x:.1f}%" if x <= 1.0 else "n/a (above the ceiling measured next to it)"


def rows(res) -> list[tuple[str, str, str, str]]:
    """Table rows of the GPU part (or one "not measured" row)."""
    if not isinstance(res, dict) or "error" in res or "engine" not in res:
        why = res.get("error", "")[-80:] if isinstance(res, dict) else str(res)
        return [("GPU (0.5B Qwen2 bf16)", "not measured", why, "")]
    e, t, dev = res["engine"], res["train"], res["device"]
    out = [(f"GPU {dev}: bf16 matmul ceiling (GFLOP/s)", f"{res['ceiling_bf16_gflops']:.0f}", "", ""),
           (f"GPU engine tok/s, {res['size']} bf16 ({res['params'] / 1e6:.0f}M)", f"{e['rftkit_tok_s']:.0f}",
            f"generate {e['generate_tok_s']:.0f}",
            f"{e['rftkit_tok_s'] / e['generate_tok_s']:.2f}x; MFU {_mfu(e['rftkit_mfu'])} vs "
            f"{_mfu(e['generate_mfu'])}"),
           ("GPU train fwd+bwd+AdamW (GFLOP/s)", f"{t['gflops']:.0f}", "", f"MFU {_mfu(t['mfu'])}")]
    g = res.get("grpo", {})
    r, trl = g.get("rftkit", {}), g.get("trl", {})
    if "median_step_s" in r:
        ref = f"TRL {trl['median_step_s']:.3f}" if "median_step_s" in trl else "TRL not run"
        ratio = f"{trl['median_step_s'] / r['median_step_s']:.2f}x faster" if "median_step_s" in trl else ""
        out.append(("GPU GRPO median step (s)", f"{r['median_step_s']:.3f}", ref, ratio))
    return out
