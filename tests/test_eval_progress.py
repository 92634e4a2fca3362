"""Evaluation shows progress: `evaluate` reports its phases through a
callback (eval/ imports no UI), the end-of-stage evaluation and `rftkit eval` display them."""

import contextlib
import io
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rftkit.cli import app
from rftkit.config import load_config
from rftkit.eval.evaluate import evaluate
from rftkit.model.io import build_model
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import GENERATORS
from rftkit.tasks.base import TASKS

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


def _problems(n: int):
    import random

    task, rng = TASKS.get("arithmetic")(), random.Random(0)
    return [task.sample(rng, 1) for _ in range(n)]


def test_evaluate_reports_each_phase_and_its_numbers_do_not_change():
    torch.manual_seed(0)
    tok = CharTokenizer()
    model = build_model("nano", 64, tok)
    gen = GENERATORS.bind("kv")(model, tok)
    problems = _problems(5)
    kw = dict(n=3, ks=[1, 3], temperature=1.0, max_new_tokens=6, seed=1)
    calls = []
    with_bar, _ = evaluate(gen, tok, problems, **kw, progress=lambda *a: calls.append(a))
    without, _ = evaluate(gen, tok, problems, **kw)
    assert with_bar == without
    phases = {}
    for phase, done, total in calls:
        assert 0 <= done <= total
        phases[phase] = (done, total)
    assert phases == {"greedy": (5, 5), "sampling": (15, 15), "scoring": (5, 5)}, calls
    assert [c[0] for c in calls].index("sampling") > [c[0] for c in calls].index("greedy")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny recipe, one step per stage, with progress on (plain lines: not a terminal)."""
    from rftkit.train.loop import train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(TINY, [f"out_dir={out}", "progress=true", "stages.base.steps=1", "stages.rl.steps=1"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run = train(cfg)
    return run.dir, err.getvalue()


def test_end_of_stage_evaluation_shows_progress(trained):
    _, printed = trained
    for stage in ("base", "rl"):
        for split in ("test", "ood"):
            assert f"eval {stage}/{split}: sampling" in printed, printed


def test_eval_command_shows_progress(trained):
    run_dir, _ = trained
    r = CliRunner().invoke(app, ["eval", str(run_dir), "eval.n_samples=2", "eval.ks=[1,2]"])
    assert r.exit_code == 0, r.output
    assert "eval test: sampling" in r.output and "eval ood: sampling" in r.output, r.output
