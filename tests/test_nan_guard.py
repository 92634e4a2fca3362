"""Non-finite losses never reach the weights: skipped, counted, and the run aborts cleanly."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rftkit.algos.objectives import OBJECTIVES
from rftkit.config import validate
from rftkit.errors import TrainingAborted
from rftkit.registry import Entry, needs_set
from rftkit.train.loop import train

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"

def nan_after(inp, *, clean_calls: int = 3):
    """Test-only: the SFT loss for `clean_calls` calls, then NaN (a diverging objective)."""
    nan_after.calls += 1
    loss = -(inp.demo_logp * inp.demo_mask).sum() / inp.demo_mask.sum()
    if nan_after.calls > clean_calls:
        loss = loss * float("nan")
    return loss, {"loss/test": float(loss.detach())}


def test_nan_steps_are_skipped_then_abort_with_the_checkpoint_intact(tmp_path, monkeypatch):
    # registered for this test only (monkeypatch removes it again)
    monkeypatch.setitem(OBJECTIVES._items, "test_nan_after", Entry(nan_after, needs_set({"demos"}), {}))
    tree = yaml.safe_load(TINY.read_text())
    tree.update(out_dir=str(tmp_path), progress=False)
    tree["stages"] = [{"name": "sft", "steps": 20, "batch_size": 8,
                       "objectives": [{"name": "test_nan_after", "params": {"clean_calls": 3}}]}]
    tree["optim"] = {"lr": 0.01, "max_bad_steps": 2}
    tree["checkpoint"] = {"every": 3, "keep": 2}
    nan_after.calls = 0
    with pytest.raises(TrainingAborted, match="non-finite steps in a row"):
        train(validate(tree, "nan-test"))
    run = tmp_path / "tiny"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["optim/skipped"] for r in records] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert records[-1]["optim/bad_steps_total"] == 3.0
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert ckpt.name == "step_000003"
    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
