"""Process reward models: step ends, Math-Shepherd labels, the prm loss, DeepSeekMath's process
advantage, the separator-absent error, and short real runs of prm.yaml and grpo_prm.yaml."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_recipes import shrink

from rftkit.algos.objectives import LossInputs
from rftkit.algos.process import grpo_process_advantages, prm_objective, process_rewards, step_ends
from rftkit.algos.shaping import RewardBatch
from rftkit.config import validate
from rftkit.envs.episodes import EpisodeLimits
from rftkit.errors import ConfigError
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.model.tokenizer import CharTokenizer
from rftkit.recipe_base import load_recipe
from rftkit.rollout.base import SamplingParams
from rftkit.train.build import check_names
from rftkit.train.loop import train
from rftkit.train.prm_labels import LoadedPrm, mc_labels, process_data, step_positions
from rftkit.types import Generation, Problem, Verdict

RECIPES = Path(__file__).parents[1] / "rftkit" / "recipes"
TRACE = "8+7=15;5+6+1=12;#125"  # arithmetic's scratchpad for 58+67: two column steps, then the answer
PROBLEM = Problem(task="arithmetic", prompt="add:58+67=", answer="125", verifier="exact")


def _batch(tok, text: str, correct: bool = True) -> dict:
    """One collated rollout row: [bos] prompt completion eos, mask on completion + eos."""
    prompt = problem_prompt_ids(tok, PROBLEM)
    comp = tok.encode(text) + [tok.eos_id]
    n = len(prompt) + len(comp)
    mask = torch.tensor([[0.0] * len(prompt) + [1.0] * len(comp)])
    return {"tokens": torch.tensor([prompt + comp]), "mask": mask, "prefix": torch.zeros(1, n),
            "problems": [PROBLEM], "texts": [text], "verdicts": [Verdict(float(correct), "125", "")]}


def test_step_ends_on_a_hand_example():
    tok = CharTokenizer()
    m = _batch(tok, TRACE)
    step_mask, found = step_positions(tok, m["tokens"], m["mask"], ";")
    start = len(problem_prompt_ids(tok, PROBLEM))
    # steps "8+7=15;" (ends at its ';', completion index 6), "5+6+1=12;" (index 15), "#125" + eos (index 20)
    assert step_mask[0].nonzero().squeeze(1).tolist() == [start + 6, start + 15, start + 20]
    assert found.tolist() == [True]
    # a multi-character token holding the separator; trailing whitespace joins the last step
    assert step_ends(["8+7", "=15;", "5", "+6=11;\n", ""], ";") == ([1, 4], True)
    assert step_ends(list("#125") + [""], ";") == ([4], False)  # no separator: one step, the whole completion


class _StubGenerator:
    """From the prefix "8+7=15;" half the completions are right; from the full second step all are."""

    def __init__(self, tok):
        self.tok = tok

    def generate(self, prompts, params: SamplingParams) -> Generation:
        texts = []
        for i, p in enumerate(prompts):
            done = self.tok.decode(p).endswith("5+6+1=12;")
            texts.append("#125" if done else ("5+6+1=12;#125" if i % 2 == 0 else "5+6+1=99;#995"))
        comps = [self.tok.encode(t) + [self.tok.eos_id] for t in texts]
        width = max(len(p) + len(c) for p, c in zip(prompts, comps, strict=True))
        tokens = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros(len(prompts), width)
        for i, (p, c) in enumerate(zip(prompts, comps, strict=True)):
            tokens[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, len(p): len(p) + len(c)] = 1.0
        return Generation(tokens, torch.zeros(len(prompts), width), mask,
                          torch.tensor([len(p) for p in prompts]), torch.zeros(len(prompts), dtype=torch.bool), texts)


@pytest.mark.parametrize("hard, first", [(False, 0.5), (True, 1.0)])
def test_math_shepherd_labels_with_a_stub_generator(hard, first):
    tok = CharTokenizer()
    m = _batch(tok, TRACE)
    step_mask, _ = step_positions(tok, m["tokens"], m["mask"], ";")
    parts = SimpleNamespace(tok=tok, generator=_StubGenerator(tok), rewards=None, model=None,
                            sampling=SamplingParams(n=1, max_new_tokens=40), episode_limits=EpisodeLimits())
    labels, metrics = mc_labels(parts, m, step_mask, seed=0, rollouts=4, hard=hard)
    ends = step_mask[0].nonzero().squeeze(1).tolist()
    # step 1: 2 of 4 completions right (soft 0.5, hard 1); step 2: 4 of 4; last step: the row's own verdict
    assert labels[0, ends].tolist() == [first, 1.0, 1.0]
    assert float(labels.sum()) == first + 2.0
    assert metrics["prm/label_rollouts"] == 8.0


def test_grpo_process_advantages_by_hand():
    """Two outputs of one group, three steps each; step ends at tokens 1, 3, 4 of a 5-token mask."""
    mask = torch.ones(2, 5)
    steps = torch.zeros(2, 5)
    steps[:, [1, 3, 4]] = 1.0
    rewards = torch.zeros(2, 5)
    rewards[0, [1, 3, 4]] = torch.tensor([0.2, 0.4, 0.6])
    rewards[1, [1, 3, 4]] = torch.tensor([0.8, 1.0, 0.0])  # a 0 step reward is still a step
    adv, returns = grpo_process_advantages(rewards, torch.tensor([0, 0]), mask, step_mask=steps, eps=0.0)
    mean, std = 0.5, math.sqrt((0.09 + 0.01 + 0.01 + 0.09 + 0.25 + 0.25) / 5)  # over all 6 steps, unbiased
    z = [[(r - mean) / std for r in row] for row in ([0.2, 0.4, 0.6], [0.8, 1.0, 0.0])]
    for i in range(2):
        s1, s2, s3 = z[i]
        want = [s1 + s2 + s3, s1 + s2 + s3, s2 + s3, s2 + s3, s3]  # sum over steps ending at or after t
        assert adv[i].tolist() == pytest.approx(want, abs=1e-6)
    assert returns is None
    # one step per output (no step mask, [N] rewards) is outcome-supervised GRPO
    outcome, _ = grpo_process_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask, eps=0.0)
    assert outcome[:, 0].tolist() == pytest.approx([0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)])  # = grpo


def test_process_rewards_put_step_scores_at_step_ends():
    mask, steps = torch.ones(1, 4), torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    scores = torch.tensor([[0.0, 0.7, 0.0, 0.4]])
    rb = RewardBatch(mask, torch.tensor([4]), torch.tensor([False]), torch.tensor([False]), torch.zeros(1, 4), None,
                     4, None, 1, steps, scores)
    out = process_rewards(torch.tensor([1.0]), rb, outcome=0.5)
    assert out.rewards[0].tolist() == pytest.approx([0.0, 0.7, 0.0, 0.9])
    assert out.metrics["prm/solution_score"] == pytest.approx(0.4)  # Math-Shepherd: min over steps


def test_prm_loss_by_hand():
    logits = torch.tensor([[0.0, 2.0, 5.0], [-1.0, 0.0, 0.0]])
    inp = LossInputs(token_scores=logits, step_labels=torch.tensor([[0.0, 0.75, 0.0], [1.0, 0.0, 0.0]]),
                     step_mask=torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    loss, metrics = prm_objective(inp)

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    assert float(loss) == pytest.approx((bce(2.0, 0.75) + bce(-1.0, 1.0)) / 2, rel=1e-6)
    assert metrics["prm/step_accuracy"] == 0.5  # step 1 right (2 > 0, 0.75 > 0.5), step 2 wrong


def test_a_separator_absent_from_every_completion_is_an_error():
    tok = CharTokenizer()
    m = _batch(tok, TRACE)
    prm = LoadedPrm(scorer=None, separator="|", folder=Path("/runs/x/reward_models/prm"))
    parts = SimpleNamespace(needs=frozenset({"prm", "rollout"}), prm=prm, tok=tok)
    with pytest.raises(ConfigError, match=r"(?s)reward_models/prm/model\.json.*'separator'.*row 0"):
        process_data(parts, m, 0, {})


def _run(name: str, tmp_path: Path):
    cfg = validate(shrink(load_recipe(RECIPES / f"{name}.yaml"), tmp_path), name)
    check_names(cfg)
    run = train(cfg)
    return run, [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]


def test_prm_recipe_trains_and_saves_a_prm(tmp_path):
    run, records = _run("prm", tmp_path)
    meta = json.loads((run.dir / "reward_models" / "prm" / "model.json").read_text())
    assert meta["prm"] is True and meta["separator"] == ";"
    prm_steps = [r for r in records if r["stage"] == "prm" and "loss/prm" in r]
    assert prm_steps and all(math.isfinite(r["loss/prm"]) and "prm/no_separator_frac" in r for r in prm_steps)


def test_grpo_prm_recipe_uses_the_prm(tmp_path):
    run, records = _run("grpo_prm", tmp_path)
    rl = [r for r in records if r["stage"] == "rl" and "prm/step_score" in r]
    assert len(rl) == 2 and all(0.0 < r["prm/step_score"] < 1.0 for r in rl)
    assert (run.dir / "eval" / "rl.json").is_file()


def test_prm_stage_key_must_match_the_parts(tmp_path):
    tree = shrink(load_recipe(RECIPES / "grpo_prm.yaml"), tmp_path)
    tree["stages"] = [{**s, "prm": None} if s["name"] == "rl" else s for s in tree["stages"]]
    from rftkit.train.build import check_bounds

    with pytest.raises(ConfigError, match=r"stages\.rl\.prm"):
        check_bounds(validate(tree, "grpo_prm"))
    tree["stages"] = [{**s, "rollout": {}} if s["name"] == "rl" else s for s in tree["stages"]]
    with pytest.raises(ConfigError, match=r"stages\.rl\.rollout\.rewards: advantage 'grpo_process'"):
        check_bounds(validate(tree, "grpo_prm"))
