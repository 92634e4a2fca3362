"""Preference training on a Hugging Face model: DPO on a TRL-format preference file (full and
LoRA), online DPO from the policy's groups, and the LoRA + reference-sampling config error."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from rftkit.config import load_config
from rftkit.errors import ConfigError
from rftkit.model.export import load_hf_model
from rftkit.train.build import check_bounds, check_names
from rftkit.train.loop import train

from hf_fixtures import tiny_hf_model

RECIPES = Path(__file__).parents[1] / "rftkit" / "recipes"
PAIRS = [{"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
          "chosen": [{"role": "assistant", "content": f"{a + b}"}],
          "rejected": [{"role": "assistant", "content": f"{a + b + 1}"}], "answer": f"{a + b}"}
         for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (9, 1)]]
SMALL = ["progress=false", "rollout.group_size=2", "rollout.max_new_tokens=6", "eval.n_samples=2",
         "eval.ks=[1,2]", "eval.splits=[test]", "data.test_size=2"]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    return tiny_hf_model(tmp_path_factory.mktemp("qwen2"), "qwen2", max_pos=1024)


def _pref_file(tmp_path: Path) -> tuple[Path, Path]:
    train_f, test_f = tmp_path / "prefs.jsonl", tmp_path / "test.jsonl"
    train_f.write_text("".join(json.dumps(r) + "\n" for r in PAIRS[2:4]))  # both steps see the same two pairs
    test_f.write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:2]))
    return train_f, test_f


def _dpo_cfg(qwen: Path, tmp_path: Path, extra: list[str] = ()):
    train_f, test_f = _pref_file(tmp_path)
    task = {"name": "dataset", "label": "prefs",
            "params": {"path": str(train_f), "test_path": str(test_f), "verifier": "exact"}}
    tree_over = [f"out_dir={tmp_path / 'runs'}", f"model.path={qwen}", f"data.tasks=[{json.dumps(task)}]",
                 "stages=[{name: dpo, steps: 2, batch_size: 2, lr: 0.0001, pairs: {name: dataset}, "
                 "objectives: [{name: dpo, params: {beta: 0.5}}]}]", *SMALL, *extra]
    return load_config(None, tree_over, base={"stages": []})


@pytest.mark.parametrize("lora", [None, {"r": 4}], ids=["full", "lora"])
def test_dpo_on_a_preference_file_raises_chosen_over_rejected(qwen, tmp_path, lora):
    extra = [f"model.lora={json.dumps(lora)}"] if lora else []
    cfg = _dpo_cfg(qwen, tmp_path, extra)
    check_names(cfg)
    run = train(cfg)
    steps = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    dpo = [r for r in steps if "loss/dpo" in r]
    assert len(dpo) == 2 and all(r["data/pairs"] == 2 for r in dpo)
    assert dpo[0]["loss/dpo"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the first step
    assert dpo[1]["pref/margin"] > 0  # after one update the chosen answers gained on the rejected ones
    model, _ = load_hf_model(run.dir / "models" / "dpo", device="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_online_dpo_on_an_hf_model_pairs_the_policys_own_samples(qwen, tmp_path):
    # a random model answers nothing right: a reward that differs between samples makes pairs
    fn = tmp_path / "distinct.py"
    fn.write_text("def fn(prompts, completions, answers):\n    return [float(len(set(c))) for c in completions]\n")
    cfg = _dpo_cfg(qwen, tmp_path, ["stages.dpo.pairs={name: group}", "reward.workers=1",
                                    f"reward.components=[{{name: distinct, fn: '{fn}:fn', isolation: inline}}]"])
    check_names(cfg)
    run = train(cfg)
    steps = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    dpo = [r for r in steps if "loss/dpo" in r]
    assert dpo and all(r["data/pairs"] >= 1 and r["pairs/margin_mean"] > 0 for r in dpo)


def test_reference_sampling_with_lora_is_a_config_error(qwen, tmp_path):
    cfg = _dpo_cfg(qwen, tmp_path, ['model.lora={"r": 4}', "stages.dpo.rollout={policy: reference}",
                                    "stages.dpo.pairs={name: group}"])
    with pytest.raises(ConfigError, match=r"stages.dpo.rollout.policy.*model.lora"):
        check_bounds(cfg)
