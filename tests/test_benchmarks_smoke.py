"""Smoke test of benchmarks/bench.py: 2 steps of each harness part, so the benchmark keeps working.

Not a measurement: a tiny SFT warm start (5 steps), 1 warm-up + 1 timed step per framework.
TRL parts are skipped when trl is not installed (`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

HAVE_TRL = importlib.util.find_spec("trl") is not None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    import torch

    import common

    torch.set_num_threads(1)  # 2 threads on a loaded 2-core machine are much slower
    wd = tmp_path_factory.mktemp("bench")
    info = common.sft_warm_start(wd / "sft_warm_start", steps=5, batch=16)
    assert abs(info["params"] - 1.84e6) < 0.01e6
    return wd


def _args(workdir: Path) -> dict:
    return {"model": str(workdir / "sft_warm_start"), "workdir": str(workdir), "threads": 1, "seed": 0,
            "steps": 1, "warmup": 1, "lr": 1e-4}


def test_tokenizer_and_task():
    import common

    tok = common.build_tokenizer()
    assert len(tok) == 49
    ids = tok("12+34=")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 7
    assert tok.decode(tok("57", add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
                      skip_special_tokens=True) == "57"
    assert common.reward("12+34=", "46") == 1.0 and common.reward("12+34=", "45") == 0.0


def test_grpo_rftkit(workdir):
    import bench

    r = bench.run_worker("grpo_rftkit", _args(workdir), workdir)
    assert "error" not in r, r.get("error")
    assert len(r["step_times"]) == 1 and r["peak_rss_mb"] > 0 and len(r["rewards"]) == 2


@pytest.mark.skipif(not HAVE_TRL, reason="trl not installed (pip install -e '.[bench]')")
def test_grpo_trl(workdir):
    import bench

    r = bench.run_worker("grpo_trl", _args(workdir), workdir)
    assert "error" not in r, r.get("error")
    assert len(r["step_times"]) == 1 and len(r["rewards"]) == 2


def test_sft_rftkit(workdir):
    import bench

    r = bench.run_worker("sft_rftkit", _args(workdir), workdir)
    assert "error" not in r, r.get("error")
    assert r["samples_per_s"] > 0


@pytest.mark.skipif(not HAVE_TRL, reason="trl not installed (pip install -e '.[bench]')")
def test_sft_trl(workdir):
    import bench

    r = bench.run_worker("sft_trl", _args(workdir), workdir)
    assert "error" not in r, r.get("error")
    assert r["samples_per_s"] > 0


def test_engine(workdir):
    import bench

    a = {**_args(workdir), "prompts": 8, "reps": 1, "big": False, "mm_n": 256}
    r = bench.run_worker("engine", a, workdir)
    assert "error" not in r, r.get("error")
    assert r["tiny"]["rftkit_tok_s"] > 0 and r["tiny"]["generate_tok_s"] > 0
    g = r["tiny_groups"]  # the RL layout: 1 prompt x 8 samples here
    assert g["group"] == 8 and g["prompts"] == 1 and g["rftkit_tokens"] > 0 and g["generate_tokens"] > 0
    assert r["ceiling_gflops"]["float32"] > 0
    rows = bench.rows({"engine": r})
    assert any("engine tok/s" in row[0] for row in rows)


def _learn_args(workdir: Path, **kw) -> dict:
    return {**_args(workdir), "heldout": 8, "eval_every": 1, "max_steps": 2, "target": 0.9, **kw}


def test_learn_rftkit(workdir):
    import bench

    r = bench.run_worker("learn_rftkit", _learn_args(workdir), workdir)
    assert "error" not in r, r.get("error")
    assert [p["step"] for p in r["curve"]] == [0, 1, 2] and r["curve"][0]["train_s"] == 0.0
    assert r["curve"][2]["train_s"] > r["curve"][1]["train_s"] > 0
    rows = bench.learn_rows({"rftkit": r})
    assert "not reached" in rows[0][1] or "samples" in rows[0][1]


@pytest.mark.skipif(not HAVE_TRL, reason="trl not installed (pip install -e '.[bench]')")
def test_learn_trl(workdir):
    import bench

    r = bench.run_worker("learn_trl", _learn_args(workdir, lr=1e-4, target=-1.0), workdir)
    assert "error" not in r, r.get("error")
    assert r["reached"] and r["curve"][-1]["step"] == 1  # target -1: reached at the first eval, training stops


def test_gpu_part_runs_on_cpu_with_the_tiny_model(workdir):
    """The GPU part's code path (ceiling, engine pair, train step, both GRPO steps with bf16
    autocast and the zero-advantage skip off) on CPU; on a CUDA machine bench.py runs it with
    the 0.5B shape."""
    import bench
    import gpu

    base = {**_args(workdir), "size": "tiny", "prompts": 8, "train_batch": 4, "mm_n": 256, "have_trl": HAVE_TRL}
    res = gpu.run(bench.run_worker, base, workdir, quick=True, device="cpu")
    assert "error" not in res, res.get("error")
    assert res["params"] == 1843968 and res["engine"]["rftkit_tok_s"] > 0 and res["train"]["mfu"] > 0
    r = res["grpo"]["rftkit"]
    assert "error" not in r, r.get("error")
    assert len(r["step_times"]) == 3 and len(r["rewards"]) == 5
    if HAVE_TRL:
        assert "error" not in res["grpo"]["trl"], res["grpo"]["trl"].get("error")
    names = [row[0] for row in gpu.rows(res)]
    assert names[0].startswith("GPU cpu") and any("GRPO" in n for n in names)
    assert gpu.rows("not measured (no CUDA device on this machine)")[0][1] == "not measured"


def test_padded_vocabulary_for_the_05b_shape():
    import common

    tok = common.build_tokenizer(151936)
    assert len(tok) == 151936 and tok("12+34=")["input_ids"] == common.build_tokenizer()("12+34=")["input_ids"]
    assert tok.decode([100000]) == "<x100000>"


def test_the_harness_refuses_a_warm_start_below_the_floor(tmp_path):
    """A start below the stated accuracy is refused before anything is timed."""
    import torch

    import bench

    torch.set_num_threads(1)
    with pytest.raises(SystemExit, match="refused: the SFT warm start reached held-out greedy accuracy"):
        bench.main(["--only", "sft", "--sft-steps", "2", "--min-warm-acc", "0.5", "--workdir", str(tmp_path)])
    assert not (tmp_path / "bench.json").exists()


def test_warm_start_schedule_warms_up_and_decays():
    import common

    lrs = [common.warm_lr(s, 100, 1e-3, 5) for s in range(100)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[4] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_share_of_the_ceiling_never_prints_more_than_100_percent():
    import re

    import bench

    fig = {"rftkit_tok_s": 1.0, "generate_tok_s": 1.0, "rftkit_gflops": 120.0}
    engine = {"ceiling_gflops": {"float32": 100.0, "bfloat16": 400.0},
              "tiny": {"rftkit_tok_s": 1.0, "generate_tok_s": 1.0},
              "25m": {"float32": {**fig, "ceiling_gflops": 110.0}, "bfloat16": {**fig, "ceiling_gflops": 400.0}},
              "25m_train": {"float32": {"gflops": 90.0, "ceiling_gflops": 100.0}}}
    text = " ".join(r[3] for r in bench.rows({"engine": engine}))
    shares = [float(x) for x in re.findall(r"([\d.]+)% of", text)]
    assert shares == [30.0, 90.0] and all(s <= 100 for s in shares)
    assert "above the float32 ceiling measured next to it" in text


def test_a_learning_start_too_close_to_the_target_is_refused():
    """The new warm start scored 0.852 held-out against the 0.9 target (2026-12-05): refused;
    the old start's 0.73 leaves room to learn."""
    import common

    with pytest.raises(SystemExit, match="start scores 0.852.*within 0.10 of the target 0.90"):
        common.check_headroom(0.852, 0.9, 0.1)
    common.check_headroom(0.73, 0.9, 0.1)
