"""Smoke test of benchmarks/gpu_scaleout.py (issue 14's GPU rows): the script works on CPU.

`--smoke` runs every part (vLLM vs HF generate, rftkit's GRPO step on vLLM, learner MFU) on the
tiny Qwen2 with 4 heads of 32; the numbers are checked against what they are computed from, not
against a speed. The TRL row needs trl, which the vLLM venv lacks: it must say so, not fail.
The table's verdicts are checked on hand-made GPU results.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_scaleout  # noqa: E402

HAVE_TRL = importlib.util.find_spec("trl") is not None


def test_without_cuda_every_row_says_not_measured(monkeypatch, capsys):
    monkeypatch.setattr(gpu_scaleout.torch.cuda, "is_available", lambda: False)
    res = gpu_scaleout.main([])
    assert res["mode"] == "none" and "generate" not in res  # nothing ran
    rows = gpu_scaleout.rows(res)
    assert len(rows) == 3 and all(r[1] == "not measured (no CUDA device)" for r in rows)
    assert capsys.readouterr().out.count("not measured (no CUDA device)") == 4  # title + 3 rows


def test_smoke_runs_every_part_on_cpu(tmp_path, capsys):
    out = tmp_path / "res.json"
    gpu_scaleout.main(["--smoke", "--threads", "1", "--out", str(out), "--workdir", str(tmp_path / "wd")])
    res = json.loads(out.read_text())
    s = res["settings"]
    assert res["mode"] == "smoke" and s["size"] == "tiny" and s["device"] == "cpu"

    g = res["generate"]
    assert "error" not in g, g.get("error")
    assert g["vllm"] == "installed" and g["params"] == 1843968
    for name, (prompts, group) in s["layouts"].items():
        r = g[name]
        for eng in ("vllm", "generate"):  # every row yields 1..new_tokens tokens (eos included)
            assert prompts * group <= r[f"{eng}_tokens"] <= prompts * group * s["new_tokens"]
            assert r[f"{eng}_tok_s"] == pytest.approx(r[f"{eng}_tokens"] / r[f"{eng}_s"])

    ours = res["grpo"]["rftkit"]
    assert "error" not in ours, ours.get("error")
    assert ours["steps"] == s["warmup"] + s["steps"] and len(ours["step_times"]) == s["steps"]
    assert ours["median_step_s"] > 0 and all(0 < n <= s["prompts"] * s["group"] * s["new_tokens"]
                                             for n in ours["gen_tokens"])
    # vLLM's sampled log-probs equal the trainer's at every step: the weights reached the engine
    assert len(ours["logprob_diff"]) == ours["steps"] and max(ours["logprob_diff"]) < 1e-4
    if not HAVE_TRL:
        assert res["grpo"]["trl"] == {"error": "not measured (trl not installed)"}

    for dtype in ("bfloat16", "bf16-mixed"):
        r = res["learner"][dtype]
        assert (r["batch"], r["seq"]) == (s["prompts"] * s["group"], 7 + s["new_tokens"])
        flops = 6 * g["params"] * r["batch"] * r["seq"] / r["step_s"]
        # > 0 only: on CPU the bf16 "ceiling" is one short matmul timing, which a tiny model's step can beat
        assert r["mfu"] == pytest.approx(flops / 1e9 / r["ceiling_gflops"]) and r["mfu"] > 0

    text = capsys.readouterr().out
    assert "CPU smoke, not a measurement" in text and "failed" not in text
    assert ("TRL not measured (trl not installed)" in text) == (not HAVE_TRL)
    assert text.count("| 1. rollout tok/s") == 2 and text.count("| 3. learner MFU") == 2


def _cuda_result(**parts) -> dict:
    """A made-up GPU result: vLLM 6x generate, rftkit 1.2x TRL's step, MFU 45 %."""
    res = {"mode": "cuda", "device": "GPU", "torch": "x", "settings": {"size": "0.5b", "new_tokens": 128,
                                                                    "layouts": {"rl": (16, 8)}},
           "generate": {"rl": {"prompts": 16, "group": 8, "vllm_tok_s": 600.0, "generate_tok_s": 100.0}},
           "grpo": {"rftkit": {"median_step_s": 1.2}, "trl": {"median_step_s": 1.0}},
           "learner": {dt: {"mfu": 0.45, "gflops": 450.0, "ceiling_gflops": 1000.0, "batch": 128, "seq": 135}
                       for dt in ("bfloat16", "bf16-mixed")}}
    return {**res, **parts}


def test_rows_judge_the_targets_on_gpu_results():
    rows = gpu_scaleout.rows(_cuda_result())
    assert rows[0][1:] == ("vLLM 600", "generate 100", "6.00x", "met (>= 5)")
    assert rows[1][1:] == ("rftkit 1.200", "TRL 1.000", "1.20x of TRL", "NOT met (<= 1)")
    assert rows[2][0] == "3. learner MFU, bfloat16, [128, 135]"
    assert rows[2][1:] == ("45.0%", "450 of 1,000 GFLOP/s", "", "met (>= 0.4)")


def test_rows_name_what_failed_or_is_missing():
    oom = {"error": "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory\n"}
    res = _cuda_result(generate={"vllm": "not installed", "rl": {"prompts": 16, "group": 8, "generate_tok_s": 100.0}},
                       grpo={"rftkit": {"error": "not measured (vLLM not installed)"},
                             "trl": {"error": "not measured (vLLM not installed)"}},
                       learner=oom)
    rows = gpu_scaleout.rows(res)
    assert rows[0][1:3] == ("vLLM not measured (vLLM not installed)", "generate 100")
    assert rows[1][1] == "not measured (vLLM not installed)"
    assert rows[2][1] == "failed: torch.OutOfMemoryError: CUDA out of memory"
    assert "| 3. learner MFU | failed: torch.OutOfMemoryError" in gpu_scaleout.table(res)
