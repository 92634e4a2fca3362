"""The `reward:` section through the real loop: components logged, a crashing user function
contained (fallback score, counted), training continuing."""

import json
from pathlib import Path

import yaml

from rftkit.config import validate
from rftkit.train.build import check_names
from rftkit.train.loop import train

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


def test_reward_runner_in_the_loop_contains_a_crashing_user_function(tmp_path):
    (tmp_path / "my_rewards.py").write_text(
        "def flaky(prompts, completions, answers):\n"
        "    raise RuntimeError('boom')\n")
    tree = yaml.safe_load(TINY.read_text())
    tree.update(out_dir=str(tmp_path), progress=False)
    tree["stages"] = [tree["stages"][1] | {"steps": 2}]
    tree["reward"] = {"components": [{"name": "correct"},
                                     {"name": "flaky", "fn": f"{tmp_path / 'my_rewards.py'}:flaky", "weight": 0.5}],
                      "primary": "correct", "workers": 1, "timeout": 5.0, "fallback": 0.0}
    cfg = validate(tree, "reward-test")
    check_names(cfg)
    run = train(cfg)
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward/mean" in r]
    assert len(steps) == 2
    assert all(r["reward/errors"] > 0 for r in steps)
    assert any("reward/correct/mean" in r for r in steps)
    assert (run.dir / "eval" / "rl.json").is_file()
