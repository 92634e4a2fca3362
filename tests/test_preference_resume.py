"""Through the real loop: preference and reward-model stages interrupted after a checkpoint and
resumed end with the same weights (the reward model's too) and the same metrics as an
uninterrupted run."""

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import rftkit.train.loop as loop
from rftkit.config import validate
from rftkit.train.build import check_names

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"
# a length cost makes a group's rewards differ even when the tiny model answers nothing right
SHAPED = {"rewards": [{"name": "length_penalty", "params": {"coef": 0.5}}]}
STAGES = {
    "online_dpo": {"pairs": {"name": "group"}, "rollout": SHAPED,
                   "objectives": [{"name": "dpo", "params": {"beta": 0.5}}, {"name": "sft", "weight": 0.1}]},
    "offline_copg": {"pairs": {"name": "group"}, "rollout": {**SHAPED, "policy": "reference"},
                     "objectives": [{"name": "copg"}]},
    "reward_model": {"pairs": {"name": "group"}, "rollout": SHAPED, "objectives": [{"name": "bradley_terry"}]},
}


class Killed(Exception):
    pass


def config(out: Path, stage: dict):
    tree = yaml.safe_load(TINY.read_text())
    tree.update(out_dir=str(out), name="pref")
    rl = {k: v for k, v in tree["stages"][1].items() if k not in ("objectives", "update_epochs")}
    tree["stages"][1] = {**rl, "steps": 8, **stage}
    tree["eval"] = {"n_samples": 2, "ks": [1, 2]}
    cfg = validate(tree, "tiny+preference")
    check_names(cfg)
    return cfg


def records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time" and not k.startswith(("time/", "perf/"))}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict:
    return load_file(str(path))


@pytest.mark.parametrize("name", list(STAGES))
def test_preference_stage_resumes_exactly(name, tmp_path, monkeypatch):
    full = loop.train(config(tmp_path / "full", STAGES[name]))
    log = loop._log

    def dying_log(run, stage, metrics):  # dies after the rl checkpoint at stage step 4
        log(run, stage, metrics)
        if stage == "rl" and run.state.stage_step == 5 and "loss/total" in metrics:
            raise Killed

    monkeypatch.setattr(loop, "_log", dying_log)
    with pytest.raises(Killed):
        loop.train(config(tmp_path / "cut", STAGES[name]))
    monkeypatch.setattr(loop, "_log", log)
    resumed = loop.train(config(tmp_path / "cut", STAGES[name]), resume=True)
    a, b = records(full.dir), records(resumed.dir)
    trained = [r for r in a if r.get("stage") == "rl" and r.get("data/pairs", 0) > 0 and "loss/total" in r]
    assert len(trained) >= 4, "the stage must actually train on pairs for the test to mean anything"
    assert a == b
    rm = ["reward_models/rl/head.safetensors", "reward_models/rl/model.safetensors"] if name == "reward_model" else []
    for rel in ["models/rl/model.safetensors", *rm]:
        wa, wb = weights(full.dir / rel), weights(resumed.dir / rel)
        assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa), rel


def test_pointwise_reward_model_stage_trains_the_scorer_not_the_policy(tmp_path):
    run = loop.train(config(tmp_path, {"objectives": [{"name": "rm_pointwise", "params": {"loss": "mse"}}],
                                       "rollout": SHAPED, "steps": 3}))
    rm = [r for r in records(run.dir) if "loss/rm" in r]
    assert len(rm) == 3 and all(r["loss/rm"] == r["loss/rm"] for r in rm)  # finite, logged every step
    policy_before, policy_after = weights(run.dir / "models/base/model.safetensors"), \
        weights(run.dir / "models/rl/model.safetensors")
    assert all(bool((policy_before[k] == policy_after[k]).all()) for k in policy_before)  # the policy never moved
    head = weights(run.dir / "reward_models/rl/head.safetensors")["weight"]
    assert bool(head.abs().sum() > 0)  # the zero-initialized head learned
