"""Multi-turn rollouts on a Hugging Face model with a tool-calling chat template (issue 15).

A tiny random Qwen2 with Qwen2.5's tool template (tests/hf_fixtures.py `tiny_qwen2_tools`):
tool schemas reach the prompt through the template, an observation is the template's tool turn
(`HFTokenizer.observation_ids`), so a context built turn by turn is the template's rendering of
the whole conversation; the real episode loop masks observations out of the loss; GRPO trains
through it. Nothing is downloaded.
"""

import json
import logging
import random
from pathlib import Path
from typing import ClassVar

import pytest
import torch

pytest.importorskip("transformers")

from rftkit.config import load_config, validate  # noqa: E402
from rftkit.envs.base import ENVS, EnvBase, StepResult  # noqa: E402
from rftkit.envs.episodes import EpisodeLimits, run_episodes  # noqa: E402
from rftkit.model.export import load_hf_model  # noqa: E402
from rftkit.model.hf import load_hf_policy  # noqa: E402
from rftkit.model.hf_tokenizer import HFTokenizer, load_hf_tokenizer, problem_prompt_ids  # noqa: E402
from rftkit.model.logprobs import token_logprobs  # noqa: E402
from rftkit.model.tokenizer import CharTokenizer  # noqa: E402
from rftkit.recipe_base import recipe_tree
from rftkit.rollout.base import SamplingParams  # noqa: E402
from rftkit.rollout.kv_engine import KVCacheEngine  # noqa: E402
from rftkit.tasks.base import TASKS  # noqa: E402
from rftkit.train.build import check_names  # noqa: E402
from rftkit.train.loop import train  # noqa: E402
from rftkit.types import Problem  # noqa: E402

from hf_fixtures import tiny_qwen2_tools, tiny_tokenizer  # noqa: E402

TOOLS = [{"type": "function", "function": {
    "name": "calc", "description": "Evaluate arithmetic",
    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}}}]
CALL = '<tool_call>\n{"name": "calc", "arguments": {"expr": "12*34"}}\n</tool_call>'
EOS_BOOST = 3.0
TOOL_TURN = "<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


@ENVS.register("t_hf_tool")
class ToolTurns(EnvBase):
    """Answers the first `turns` model turns with "result <k>" (a tool call each), then ends the
    episode; each turn earns 0.05 per character written, so GRPO groups have reward spread."""

    def __init__(self, problem, *, turns: int = 2) -> None:
        super().__init__(problem)
        self.k, self.turns = 0, turns

    def step(self, action):
        self.k += 1
        reward = 0.05 * min(len(action), 20)
        if self.k > self.turns:
            return StepResult(reward=reward, done=True)
        return StepResult(observation=f"result {self.k}", reward=reward, info={"tool_calls": 1})


@TASKS.register("t_hf_tool_task")
class ToolTask:
    """Multiplication questions with the calc tool in the prompt, played in `env`."""

    name: ClassVar[str] = "t_hf_tool_task"
    difficulty_doc: ClassVar[str] = "digits of each factor"
    default_difficulty: ClassVar[tuple[int, int]] = (2, 2)
    default_ood: ClassVar[tuple[int, int]] = (3, 3)

    def __init__(self, *, env: str = "t_hf_tool") -> None:
        self.env = env

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        a, b = rng.randint(10 ** (difficulty - 1), 10**difficulty), rng.randint(2, 9)
        return Problem(task=self.name, prompt=f"What is {a} * {b}?", answer=str(a * b), verifier="exact",
                       difficulty=difficulty, env=self.env, meta={"tools": TOOLS})


@pytest.fixture(scope="module")
def qwen_tools(tmp_path_factory) -> Path:
    """The tiny tool-template Qwen2, made to end its turns: a random model rarely writes eos,
    so eos's embedding (tied: also its output row) gains the mean final hidden state's
    direction, raising its logit by about EOS_BOOST where the hidden state is typical."""
    from transformers import AutoModelForCausalLM

    folder = tiny_qwen2_tools(tmp_path_factory.mktemp("qwen2_tools"))
    tok = load_hf_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([problem_prompt_ids(tok, ToolTask().sample(random.Random(0), 2))])
    with torch.no_grad():
        mean = model.model(input_ids=ids).last_hidden_state[0].mean(0)
        model.get_input_embeddings().weight[tok.eos_id] += EOS_BOOST * mean / mean.norm() ** 2
    model.save_pretrained(folder)
    return folder


def _chat(*turns: str) -> list[dict]:
    """user, then alternating assistant / tool messages."""
    roles = ["assistant", "tool"]
    return [{"role": "user", "content": "What is 12*34?"}] + [
        {"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


def test_tools_reach_the_prompt_through_the_template(qwen_tools, caplog):
    tok = load_hf_tokenizer(qwen_tools)
    plain = Problem(task="t", prompt="What is 12*34?", answer="408", verifier="exact")
    with_tools = Problem(task="t", prompt=plain.prompt, answer="408", verifier="exact", meta={"tools": TOOLS})
    text = tok.hf.decode(problem_prompt_ids(tok, with_tools))
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in text and "<tool_call>" in text
    assert text.endswith("<|im_start|>user\nWhat is 12*34?<|im_end|>\n<|im_start|>assistant\n")
    assert problem_prompt_ids(tok, plain) == tok.prompt_ids(plain.prompt)  # no tools: unchanged
    assert "<tools>" not in tok.render_prompt(plain.prompt)
    char = CharTokenizer()  # the built-in tokenizer ignores tools
    assert problem_prompt_ids(char, with_tools) == [char.bos_id] + char.encode(plain.prompt)
    llama = HFTokenizer(tiny_tokenizer("llama"))  # its template has no tools: rendered without, a warning
    with caplog.at_level(logging.WARNING, logger="rftkit.model"):
        assert llama.prompt_ids(plain.prompt, tools=TOOLS) == llama.prompt_ids(plain.prompt)
    assert "ignores `tools`" in caplog.text
    with pytest.raises(ValueError, match="list of function specs"):
        problem_prompt_ids(tok, Problem(task="t", prompt="x", answer="1", verifier="exact", meta={"tools": "calc"}))


def test_a_context_built_turn_by_turn_is_the_templates_rendering_of_the_conversation(qwen_tools):
    tok = load_hf_tokenizer(qwen_tools)
    assert tok.hf.decode(tok.observation_ids("408"), skip_special_tokens=False) == "\n" + TOOL_TURN.format("408")
    problem = Problem(task="t", prompt="What is 12*34?", answer="408", verifier="exact", meta={"tools": TOOLS})
    ids = problem_prompt_ids(tok, problem)
    for model_turn, obs in [(CALL, "408"), ("Checking. " + CALL, "result: 408")]:
        ids += tok.encode(model_turn) + [tok.eos_id]  # what the model writes: the turn, then eos
        ids += tok.observation_ids(obs)
    convo = _chat(CALL, "408", "Checking. " + CALL, "result: 408")
    rendered = tok.hf.apply_chat_template(convo, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert ids == tok.encode(rendered)
    # a call the model writes as text is the template's rendering of a structured tool call
    structured = [convo[0], {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calc", "arguments": {"expr": "12*34"}}}]}, convo[2]]
    assert tok.hf.apply_chat_template(structured, tools=TOOLS, tokenize=False, add_generation_prompt=True) == \
        tok.hf.apply_chat_template(convo[:3], tools=TOOLS, tokenize=False, add_generation_prompt=True)
    # a turn ended by a stop string, not eos: the observation closes the turn itself
    assert tok.observation_ids("408", eos_emitted=False) == [tok.eos_id] + tok.observation_ids("408")


@pytest.mark.parametrize("flavour,turn", [
    ("qwen2", "\n<|im_start|>tool\n408<|im_end|>\n<|im_start|>assistant\n"),  # renders role "tool" as is
    ("llama", "<|start_header_id|>tool<|end_header_id|>\n\n408<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
              "\n\n")])
def test_observation_ids_read_any_template(flavour, turn):
    tok = HFTokenizer(tiny_tokenizer(flavour))
    assert tok.hf.decode(tok.observation_ids("408"), skip_special_tokens=False) == turn


def test_a_template_without_role_tool_gets_a_user_turn_and_no_template_the_plain_text(caplog):
    hf = tiny_tokenizer("qwen2")
    hf.chat_template = ("{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
                        "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
                        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = HFTokenizer(hf)
    with caplog.at_level(logging.WARNING, logger="rftkit.model"):
        ids = tok.observation_ids("408")
    assert tok.hf.decode(ids, skip_special_tokens=False) == "\n<|im_start|>user\n408<|im_end|>\n<|im_start|>assistant\n"
    assert "does not render role 'tool'" in caplog.text
    bare = HFTokenizer(tiny_tokenizer("qwen2"), chat_template=False)
    assert bare.observation_ids("408") == bare.encode("408")


class _Recording:
    """The real engine, keeping the contexts of each call (turn k's call is calls[k])."""

    def __init__(self, engine) -> None:
        self.engine, self.calls = engine, []

    def generate(self, prompts, params):
        self.calls.append([list(p) for p in prompts])
        return self.engine.generate(prompts, params)


def test_multi_turn_rollout_on_the_hf_model_masks_the_tool_turns(qwen_tools):
    policy, tok = load_hf_policy(qwen_tools, device="cpu"), load_hf_tokenizer(qwen_tools)
    problems = [ToolTask().sample(random.Random(i), 2) for i in range(8)]
    prompts = [problem_prompt_ids(tok, p) for p in problems]
    engine = _Recording(KVCacheEngine(policy, tok))
    lives = run_episodes(engine, tok, problems, prompts, SamplingParams(n=1, max_new_tokens=24, seed=1),
                         EpisodeLimits(max_turns=4), 1024)
    full = [lv for lv in lives if lv.episode.end == "done"]
    assert len(full) >= 2 and all(lv.episode.turns == 3 and len(lv.episode.turn_rewards) == 3 for lv in full)
    assert all(lv.episode.info == {"tool_calls": 2.0} for lv in full)
    assert all(lv.episode.turns <= 3 for lv in lives) and len(engine.calls) == 3  # the env ends every episode
    for lv in lives:
        segs = lv.episode.segments
        assert [m for _, m, _ in segs] == [True, False] * (len(segs) // 2) + [True] * (len(segs) % 2)
        assert lv.mask == [float(m) for ids, m, _ in segs for _ in ids]
        assert lv.ids[lv.prompt_len:] == [t for ids, _, _ in segs for t in ids]
        assert all(ids[-1] == tok.eos_id for ids, m, _ in segs[:-1] if m)  # each continued turn ended with eos
        for k, (ids, m, _) in enumerate(segs):
            if not m:  # observations: the template's tool turn, untrained, no log-probs
                assert ids == tok.observation_ids(f"result {(k + 1) // 2}")
        assert all(lp == 0.0 for lp, m in zip(lv.logp, lv.mask) if m == 0)
        assert all(lp < 0.0 for lp, m in zip(lv.logp, lv.mask) if m == 1)
    lv = full[0]
    turn1 = lv.episode.segments[0][0]
    second = next(c for c in engine.calls[1] if c[: lv.prompt_len + len(turn1)] == lv.ids[: lv.prompt_len + len(turn1)])
    assert tok.hf.decode(second[lv.prompt_len:], skip_special_tokens=False).endswith(
        "<|im_end|>\n" + TOOL_TURN.format("result 1"))  # turn 2 sees the model's eos, then the tool turn
    # the engine's log-probs are the training forward's over the whole multi-turn row
    with torch.no_grad():
        lp, _ = token_logprobs(policy, torch.tensor([lv.ids]))
    mask = torch.tensor([[0.0] * lv.prompt_len + lv.mask])
    assert (lp * mask - torch.tensor([[0.0] * lv.prompt_len + lv.logp])).abs().max() < 1e-4


def test_grpo_trains_an_hf_model_through_tool_episodes(qwen_tools, tmp_path):
    task = {"name": "t_hf_tool_task"}
    cfg = load_config(None, [
        f"out_dir={tmp_path / 'runs'}", f"model.path={qwen_tools}", f"data.tasks=[{json.dumps(task)}]",
        "data.train_size=8", "data.test_size=2", "data.ood_size=0", "progress=false",
        "rollout.group_size=2", "rollout.max_new_tokens=12", "rollout.episode.max_turns=3",
        "eval.n_samples=2", "eval.ks=[1,2]", "eval.splits=[test]",
        "stages=[{name: rl, steps: 2, batch_size: 2, lr: 0.001, objectives: [{name: policy}]}]"],
        base={"stages": []})
    check_names(cfg)
    run = train(cfg)
    steps = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in steps if "env/turns_mean" in r]
    assert len(rl) == 2
    assert all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for r in rl for v in r.values()
               if not isinstance(v, (bool, str)))
    assert max(r["env/turns_mean"] for r in rl) > 1 and "env/tool_calls_mean" in rl[0]
    model, _ = load_hf_model(run.dir / "models" / "rl", device="cpu")
    start = load_hf_policy(qwen_tools, device="cpu")
    after, before = dict(model.named_parameters()), dict(start.named_parameters())
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in after)  # the episodes' rewards moved the weights
    assert all(torch.isfinite(p).all() for p in after.values())


@pytest.mark.parametrize("recipe", ["agent_calc", "agent_game", "agent_user", "agent_archer", "agent_toolrl"])
def test_the_agent_recipes_run_on_an_hf_chat_model(recipe, qwen_tools, tmp_path):
    """Each agent recipe's RL stage as shipped, on the tiny tool-template Qwen2 (sizes cut):
    tool specs reach the chat prompt, episodes run through the template, metrics are finite."""
    tree = recipe_tree(recipe)
    rl = next(s for s in tree["stages"] if s["name"] == "rl")
    tree["stages"] = [{**rl, "steps": 2, "batch_size": 2}]
    tree.update(out_dir=str(tmp_path), progress=False)
    tree["model"] = {"path": str(qwen_tools), "threads": 1}
    tree["data"] = {**tree["data"], "train_size": 8, "test_size": 2, "ood_size": 0}
    tree["rollout"] = {**tree["rollout"], "group_size": 2, "max_new_tokens": 12}
    tree["eval"] = {"n_samples": 2, "ks": [1, 2], "splits": ["test"]}
    cfg = validate(tree, recipe)
    check_names(cfg)
    run = train(cfg)
    rows = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "env/turns_mean" in r]
    assert len(steps) == 2 and all(v == v for r in steps for v in r.values() if isinstance(v, float))
    assert (run.dir / "eval" / "rl.json").is_file()
