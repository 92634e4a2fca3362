"""A visual recipe end to end through the CLI: images in the records and the report, `rftkit
eval` on a VLM folder, and SIGKILL mid-RL then --resume gives bit-identical weights and metrics
(the image bank of the resumed process is refilled from the regenerated pools)."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_run_resume import _records, kill_after_checkpoint, rftkit

VISION = Path(__file__).parent / "fixtures" / "vision_tiny.yaml"


@pytest.fixture(scope="module")
def vision_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vision")
    rftkit("run", str(VISION), f"out_dir={out}", "model.threads=1")
    return out / "vision_tiny"


def test_vision_run_records_images_and_reports_them(vision_run):
    records = [json.loads(x) for x in (vision_run / "eval" / "rl_test.jsonl").read_text().splitlines()]
    assert records and all(r["images"] and r["images"][0]["png"].startswith("data:image/png") for r in records)
    assert {len(r["images"]) for r in records} == {1, 2}  # grounding: one image; change: two frames
    assert 'id="images"' in (vision_run / "report.html").read_text()
    rl = [r for r in map(json.loads, (vision_run / "metrics.jsonl").read_text().splitlines())
          if r.get("stage") == "rl" and "reward/mean" in r]
    assert len(rl) == 8 and all(0 <= r["reward/mean"] <= 1 for r in rl)


def test_eval_command_on_a_vlm_folder(vision_run):
    proc = rftkit("eval", str(vision_run / "models" / "rl"), "eval.n_samples=2", "eval.ks=[1,2]")
    assert "pass@2" in proc.stdout


def test_a_text_only_model_with_image_tasks_is_a_config_error(tmp_path):
    proc = rftkit("run", str(VISION), f"out_dir={tmp_path}", "model.vision=null", check=False)
    assert proc.returncode == 2 and "data.tasks[0]" in proc.stderr and "text-only" in proc.stderr


def test_vision_kill_and_resume_is_exact(vision_run, tmp_path):
    kill_after_checkpoint(VISION, tmp_path, "vision_tiny", 24)  # the base stage is 20 steps
    rftkit("run", "--resume", str(tmp_path / "vision_tiny"))
    a = load_file(str(vision_run / "models" / "rl" / "model.safetensors"))
    b = load_file(str(tmp_path / "vision_tiny" / "models" / "rl" / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert _records(vision_run) == _records(tmp_path / "vision_tiny")


def test_model_vision_must_match_the_model_it_starts_from(vision_run, tmp_path):
    """model.init with the recipe's own vision section runs; another one is a config error."""
    base = vision_run / "models" / "base"
    rftkit("run", str(VISION), f"out_dir={tmp_path}", f"model.init={base}", "stages.0.steps=1", "stages.1.steps=1",
           "name=again")
    proc = rftkit("run", str(VISION), f"out_dir={tmp_path}", f"model.init={base}", "model.vision.layers=2",
                  check=False)
    assert proc.returncode == 2 and "model.vision" in proc.stderr and "model.init" in proc.stderr


def test_model_vision_with_an_hf_model_is_a_config_error(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    proc = rftkit("run", str(VISION), f"out_dir={tmp_path}", f"model.path={tmp_path / 'hf'}", check=False)
    assert proc.returncode == 2 and "model.vision" in proc.stderr and "model.path" in proc.stderr


def test_train_vision_without_an_hf_model_is_a_config_error(tmp_path):
    proc = rftkit("run", str(VISION), f"out_dir={tmp_path}", "model.train_vision=true", check=False)
    assert proc.returncode == 2 and "model.train_vision" in proc.stderr and "model.path" in proc.stderr

