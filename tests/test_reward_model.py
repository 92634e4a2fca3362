"""Reward-model folders, their Hugging Face export, a reward-model stage, and an RM as a reward.

The scorer is a trunk + Linear(d, 1) head read at the eos (rftkit/model/reward_model.py). These
tests check that saving and loading keep its scores, that transformers'
AutoModelForSequenceClassification computes the same scores from the saved / exported folder
(built-in GPT and a tiny random Qwen2, LoRA merged), that the reward_model and rm_grpo recipes
train, save and use the RM end to end, and that a folder without a scalar head is refused.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rftkit.config import RewardCfg, validate
from rftkit.data.pairs import DatasetPairs
from rftkit.errors import ConfigError
from rftkit.model.io import build_model, save_model
from rftkit.model.reward_model import (
    RewardScorer,
    load_reward_model,
    rm_pad,
    save_reward_model,
    score_completions,
)
from rftkit.model.tokenizer import CharTokenizer
from rftkit.recipe_base import recipe_tree
from rftkit.report.log import read_metrics
from rftkit.train.batches import pair_batch
from rftkit.train.loop import train
from rftkit.train.reward_stage import held_out_pair_accuracy
from rftkit.train.rewards_build import ScorerReward, build_reward_runner
from rftkit.types import Problem

PROMPTS = ["12+30=", "7+8=", "99+1="]
COMPLETIONS = ["42", "15 because 7+8", "100"]


def _scorer(seed: int = 0) -> tuple[RewardScorer, CharTokenizer]:
    torch.manual_seed(seed)
    tok = CharTokenizer()
    scorer = RewardScorer(build_model("nano", 64, tok))
    torch.nn.init.normal_(scorer.head.weight)  # a zero head scores everything 0: nothing to compare
    return scorer, tok


def _rows(prompt_ids, tok, completions):
    """Right-padded [bos] prompt completion [eos] rows with `pad` and their completion masks."""
    rows = [p + tok.encode(c) + [tok.eos_id] for p, c in zip(prompt_ids, completions)]
    t = max(len(r) for r in rows)
    tokens = torch.tensor([r + [tok.pad_id] * (t - len(r)) for r in rows])
    mask = torch.zeros(tokens.shape)
    for i, (p, r) in enumerate(zip(prompt_ids, rows)):
        mask[i, len(p): len(r)] = 1.0
    return tokens, mask


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    scorer, tok = _scorer()
    folder = save_reward_model(scorer, tok, tmp_path / "rm")
    assert json.loads((folder / "model.json").read_text())["arch"] == "reward_model"
    assert sorted(p.name for p in folder.iterdir()) == ["head.safetensors", "model.json", "model.safetensors"]
    loaded, tok2 = load_reward_model(folder)
    tokens, mask = _rows([[tok.bos_id] + tok.encode(p) for p in PROMPTS], tok, COMPLETIONS)
    with torch.no_grad():
        assert torch.equal(scorer.score(tokens, mask), loaded.score(tokens, mask))
    assert score_completions(scorer, tok, PROMPTS, COMPLETIONS) == score_completions(loaded, tok2, PROMPTS, COMPLETIONS)


def test_reward_fn_scores_the_layout_the_scorer_trained_on(tmp_path):
    """ScorerReward(prompts, completions) == scorer.score on pair_batch's rows (the training layout)."""
    scorer, tok = _scorer(1)
    problems = [Problem(task="t", prompt=p, answer="", verifier="exact") for p in PROMPTS]
    from rftkit.data.pairs import Pair

    pb = pair_batch(tok, [Pair(p, c, "0") for p, c in zip(problems, COMPLETIONS)], None, 64)
    with torch.no_grad():
        trained = scorer.score(pb.tokens[:, 0], pb.mask[:, 0])
    fn = ScorerReward(save_reward_model(scorer, tok, tmp_path / "rm"), batch_size=2)
    assert fn(PROMPTS, COMPLETIONS, ["", "", ""]) == pytest.approx(trained.tolist(), abs=1e-5)


def test_builtin_rm_exports_to_a_sequence_classifier_with_the_same_scores(tmp_path):
    tf = pytest.importorskip("transformers")
    from rftkit.model.export import export_run

    scorer, tok = _scorer(2)
    out = export_run(save_reward_model(scorer, tok, tmp_path / "rm"), tmp_path / "hf")
    hf = tf.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert hf.config.num_labels == 1 and hf.config.pad_token_id == tok.pad_id != tok.eos_id
    tokens, mask = _rows([[tok.bos_id] + tok.encode(p) for p in PROMPTS], tok, COMPLETIONS)
    with torch.no_grad():
        assert torch.allclose(hf(tokens).logits.squeeze(-1), scorer.score(tokens, mask), atol=1e-4)
    hf_tok = tf.AutoTokenizer.from_pretrained(str(out))
    assert hf_tok(PROMPTS[0] + COMPLETIONS[0])["input_ids"] == [tok.bos_id] + tok.encode(PROMPTS[0] + COMPLETIONS[0])


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora_merged"])
def test_hf_rm_folder_is_a_sequence_classifier_with_the_same_scores(tmp_path, lora):
    tf = pytest.importorskip("transformers")
    if lora:
        pytest.importorskip("peft")
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer

    from hf_fixtures import tiny_qwen2

    src = tiny_qwen2(tmp_path / "qwen")
    policy = load_hf_policy(src, device="cpu", dtype="float32", lora={"r": 4} if lora else None)
    tok = load_hf_tokenizer(src)
    torch.manual_seed(3)
    scorer = RewardScorer(policy)
    torch.nn.init.normal_(scorer.head.weight)
    if lora:  # adapters that change the function, so merging them matters
        with torch.no_grad():
            for name, p in scorer.trunk.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    folder = save_reward_model(scorer, tok, tmp_path / "rm")
    hf = tf.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    assert hf.config.num_labels == 1 and hf.config.pad_token_id != tok.eos_id
    tokens, mask = _rows([tok.prompt_ids(p) for p in PROMPTS], SimpleNamespace(
        encode=tok.encode, eos_id=tok.eos_id, pad_id=hf.config.pad_token_id), COMPLETIONS)
    with torch.no_grad():
        expected = scorer.score(tokens, mask)
        assert torch.allclose(hf(tokens).logits.squeeze(-1), expected, atol=1e-4)
    loaded, tok2 = load_reward_model(folder)
    assert score_completions(loaded, tok2, PROMPTS, COMPLETIONS) == pytest.approx(expected.tolist(), abs=1e-4)


def test_rm_pad_is_not_eos_when_the_tokenizer_has_another_token():
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_tokenizer

    qwen, llama = tiny_tokenizer("qwen2"), tiny_tokenizer("llama")
    assert rm_pad(qwen) == ("pad_token", qwen.pad_token_id)
    assert rm_pad(llama) == ("bos_token", llama.bos_token_id)  # no pad token: bos only opens a row
    assert rm_pad(SimpleNamespace(eos_token_id=5, pad_token_id=5, unk_token_id=None, bos_token_id=None)) == (
        "eos_token", 5)


def test_held_out_pair_accuracy_counts_pairs_the_scorer_orders_right():
    scorer, tok = _scorer(4)
    problems = [Problem(task="t", prompt=p, answer="", verifier="exact", demo=c, meta={"rejected": c[::-1] + "9"})
                for p, c in zip(PROMPTS, COMPLETIONS)]
    parts = SimpleNamespace(needs=frozenset({"pairs"}), scorer=scorer, tok=tok, model=scorer.trunk)
    acc, n = held_out_pair_accuracy(parts, DatasetPairs(problems), problems, seed=0)
    chosen = score_completions(scorer, tok, PROMPTS, COMPLETIONS)
    rejected = score_completions(scorer, tok, PROMPTS, [p.meta["rejected"] for p in problems])
    assert n == 3 and acc == pytest.approx(sum(c > r for c, r in zip(chosen, rejected)) / 3)


def _tiny(recipe: str, out_dir: Path) -> dict:
    tree = recipe_tree(recipe)
    tree.update(out_dir=str(out_dir), progress=False, stage_cache=False)
    tree["model"] = {**tree.get("model", {}), "size": "nano", "threads": 1}
    tree["data"] = {**tree["data"], "train_size": 64, "test_size": 4, "ood_size": 4}
    tree["eval"] = {**tree.get("eval", {}), "n_samples": 2, "ks": [1, 2]}
    tree["rollout"] = {**tree["rollout"], "group_size": 2}
    tree["stages"] = [{**s, "steps": 2, "batch_size": 4} for s in tree["stages"]]
    return tree


def test_reward_model_recipe_saves_the_rm_and_logs_its_pair_accuracy(tmp_path):
    run = train(validate(_tiny("reward_model", tmp_path), "reward_model"))
    assert [s.name for s in run.cfg.stages] == ["base", "sft", "rm"]
    folder = run.dir / "reward_models" / "rm"
    assert json.loads((folder / "model.json").read_text())["arch"] == "reward_model"
    records = [r for r in read_metrics(run.dir / "metrics.jsonl") if "eval/rm/pair_accuracy" in r]
    assert len(records) == 1 and records[0]["stage"] == "rm" and "eval/rm/pairs" in records[0]
    summary = json.loads((run.dir / "eval" / "rm_rm.json").read_text())
    assert summary["pairs"] == records[0]["eval/rm/pairs"]
    load_reward_model(folder)


def test_rm_grpo_trains_the_rm_then_uses_it_as_the_reward(tmp_path):
    run = train(validate(_tiny("rm_grpo", tmp_path), "rm_grpo"))
    assert (run.dir / "reward_models" / "rm" / "model.json").is_file()
    records = read_metrics(run.dir / "metrics.jsonl")
    rm_steps = [r for r in records if r["stage"] == "rm" and "reward/rm/mean" in r]
    rl_steps = [r for r in records if r["stage"] == "rl" and "reward/rm/mean" in r]
    assert rm_steps and all(r["reward/rm/mean"] == 0.0 for r in rm_steps)  # not trained yet: scores 0
    assert len(rl_steps) == 2 and all("reward/correct/mean" in r and r["reward/errors"] == 0 for r in rl_steps)
    rm = run.rewards.spec.components[0].fn
    assert rm.scorer is not None  # loaded from reward_models/rm once the rm stage had saved it
    # (a 2-step nano policy answers nothing right, so the rm stage has no pair and its head stays 0)


def _runner(tmp_path, model_path: str):
    cfg = RewardCfg(components=[{"name": "rm", "model": model_path}])
    policy = build_model("nano", 64, CharTokenizer())
    return build_reward_runner(cfg, policy, CharTokenizer(), tmp_path)


def test_a_policy_folder_as_rm_is_a_config_error(tmp_path):
    save_model(build_model("nano", 64, CharTokenizer()), CharTokenizer(), tmp_path / "models" / "sft")
    with pytest.raises(ConfigError) as e:
        _runner(tmp_path, "models/sft")
    msg = str(e.value)
    assert "reward.components.rm.model" in msg and "no scalar head" in msg and "reward_models/<stage>" in msg
    assert "\n" not in msg


def test_a_later_stage_rm_loads_lazily_and_a_wrong_stage_name_fails_now(tmp_path):
    (tmp_path / "config.yaml").write_text("stages:\n  - {name: sft}\n  - {name: rm}\n")
    runner = _runner(tmp_path, "reward_models/rm")  # not written yet: accepted, scores 0 until it is
    fn = runner.spec.components[0].fn
    assert fn(PROMPTS, COMPLETIONS, []) == [0.0, 0.0, 0.0]
    scorer, tok = _scorer(5)
    save_reward_model(scorer, tok, tmp_path / "reward_models" / "rm")
    assert fn(PROMPTS, COMPLETIONS, []) == pytest.approx(score_completions(scorer, tok, PROMPTS, COMPLETIONS))
    with pytest.raises(ConfigError, match="no stage of this run is named 'rmm'"):
        _runner(tmp_path, "reward_models/rmm")
