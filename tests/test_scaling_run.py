"""Test-time scaling through a real run and `rftkit eval`: an RM trained in the run scores the
final evaluation (skipped by the evaluations before it exists), beam and verifier-guided step
search run, and config errors come before training."""

import json
from pathlib import Path

import pytest
import yaml

from rftkit.config import validate
from rftkit.errors import ConfigError
from rftkit.train.build import check_names
from rftkit.train.loop import train
from rftkit.train.scaling_build import build_scaling

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"
SHAPED = {"rewards": [{"name": "length_penalty", "params": {"coef": 0.5}}]}
SCALING = {"reward_model": "reward_models/rm", "beam_width": 2,
           "step_search": {"guide": "verifier", "width": 2, "expand": 2, "rollouts": 2, "max_steps": 3}}


def config(out: Path, scaling: dict):
    tree = yaml.safe_load(TINY.read_text())
    tree.update(out_dir=str(out), name="tts")
    base, rl = tree["stages"]
    rm = {"name": "rm", "steps": 3, "batch_size": 8, "pairs": {"name": "group"}, "rollout": SHAPED,
          "objectives": [{"name": "bradley_terry"}]}
    tree["stages"] = [base, rm, {**rl, "steps": 2}]
    tree["eval"] = {"n_samples": 4, "ks": [1, 4], "scaling": scaling}
    cfg = validate(tree, "tiny+scaling")
    check_names(cfg)
    return cfg


def test_a_run_evaluates_with_its_own_rm_and_both_searches(tmp_path):
    run = train(config(tmp_path, SCALING))
    base = json.loads((run.dir / "eval" / "base.json").read_text())["results"]["test"]
    final = json.loads((run.dir / "eval" / "rl.json").read_text())["results"]["test"]
    assert "bon/rm@n" not in base and "bon/logprob@n" in base  # the RM did not exist yet
    for key in ["bon/rm@n", "wmaj/rm@n", "bon/logprob@n", "curve/rm@4", "beam@2", "step_search/verifier@2x2"]:
        assert 0.0 <= final[key] <= 1.0, key
    assert final["curve/verifier@4"] == pytest.approx(final["pass@4"])
    assert final["step_search/samples"] > 0
    rec = json.loads((run.dir / "eval" / "rl_test.jsonl").read_text().splitlines()[0])
    assert len(rec["rm_scores"]) == 4 and "beam" in rec["search"] and "step_search" in rec["search"]


def test_scaling_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="eval.scaling.step_search.guide"):
        config(tmp_path, {"step_search": {"guide": "prm"}})
    cfg = config(tmp_path, {"reward_model": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="eval.scaling.reward_model"):
        build_scaling(cfg.eval.scaling, tmp_path, "cpu")


def test_rftkit_eval_shows_the_selectors(tmp_path):
    from typer.testing import CliRunner

    from rftkit.cli import app

    run = train(config(tmp_path, {"reward_model": "reward_models/rm", "beam_width": 1}))
    res = CliRunner().invoke(app, ["eval", str(run.dir / "models" / "rl"), "eval.splits=[test]"])
    assert res.exit_code == 0, res.output
    for key in ["bon/rm@n", "wmaj/rm@n", "bon/logprob@n", "beam@1"]:
        assert key in res.output, key
    saved = json.loads((run.dir / "models" / "rl" / "eval_results.json").read_text())["test"]
    assert "curve/rm@4" in saved
