"""Learned rewards: a reward model from a local dir (tiny random Qwen2, no download) and RLPR."""

from __future__ import annotations

import math

import pytest
import torch

from rftkit.rewards import Component, RewardSpec, RLPRReward, causal_lm_logprob_fn, rlpr_reward, score_batch
from rftkit.rewards.learned import reasoning_context
from rftkit.types import Problem

PROMPT = "What is 2+3? "
CORPUS = [PROMPT + "<think>2 plus 3 is 5</think><answer>5</answer>", "hello world, the answer is 42"] * 10


def fake_logprob_fn(calls: list):
    """log p(each target char) = log 0.9 after a good reasoning, log 0.5 after other reasoning,
    log 0.3 with no reasoning at all (the context ends right after the prompt and marker)."""

    def fn(contexts, targets):
        calls.append((list(contexts), list(targets)))
        out = []
        for c, t in zip(contexts, targets):
            body = c[len(PROMPT):]
            p = 0.3 if body in ("", "<answer>") else (0.9 if "good" in body else 0.5)
            out.append([math.log(p)] * len(t))
        return out

    return fn


def test_rlpr_formula_with_a_known_logprob_fn():
    calls: list = []
    comps = ["<think>good</think><answer>7</answer>", "<think>meh</think><answer>9</answer>", "no marker at all"]
    r = rlpr_reward([PROMPT] * 3, comps, ["5", "5", "5"], fake_logprob_fn(calls), debias=False)
    assert r == pytest.approx([0.9, 0.5, 0.5])
    assert calls[0][0][0] == PROMPT + "<think>good</think><answer>"  # reasoning z up to the answer marker
    assert calls[0][0][2] == PROMPT + "no marker at all"
    debiased = rlpr_reward([PROMPT] * 3, comps, ["5"] * 3, fake_logprob_fn(calls))
    assert debiased == pytest.approx([0.6, 0.2, 0.2])  # clip(r - r_no_reasoning, 0, 1)
    assert rlpr_reward([PROMPT], ["<answer>"], ["5"], fake_logprob_fn(calls)) == [0.0]  # clipped at 0


def test_rlpr_is_one_when_the_reference_is_certain():
    certain = lambda contexts, targets: [[0.0] * len(t) for t in targets]  # noqa: E731  p = 1 per token
    assert rlpr_reward(["q"], ["z<answer>"], ["abc"], certain, debias=False) == [1.0]
    assert reasoning_context("a<answer>b</answer> then \\boxed{c}") == "a<answer>b</answer> then \\boxed{"


transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A byte-level BPE tokenizer with a chat template, a tiny random Qwen2 classifier and LM."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
    root = tmp_path_factory.mktemp("tiny_qwen2")
    cfg = dict(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, pad_token_id=fast.pad_token_id)
    torch.manual_seed(0)
    for name, cls, extra in [("rm", transformers.Qwen2ForSequenceClassification, {"num_labels": 1}),
                             ("lm", transformers.Qwen2ForCausalLM, {})]:
        fast.save_pretrained(root / name)
        cls(transformers.Qwen2Config(**cfg, **extra)).save_pretrained(root / name)
    return root


def test_reward_model_from_a_local_dir_is_batched_and_padding_invariant(tiny_dir):
    from rftkit.rewards import RewardModel

    prompts = [PROMPT, "Say hi. ", PROMPT]
    comps = ["<think>2 plus 3</think><answer>5</answer>", "hello", "<answer>6</answer>"]
    rm_batched = RewardModel(str(tiny_dir / "rm"), batch_size=3, device="cpu")
    rm_single = RewardModel(str(tiny_dir / "rm"), batch_size=1, device="cpu")
    a, b = rm_batched(prompts, comps, ["5", "", "5"]), rm_single(prompts, comps, ["5", "", "5"])
    assert len(a) == 3 and all(isinstance(x, float) for x in a)
    assert a == pytest.approx(b, abs=1e-5)
    assert rm_batched.texts([PROMPT], ["5"]) == [f"<|user|>{PROMPT}<eos><|assistant|>5<eos>"]
    spec = RewardSpec((Component("correct", "exact"), Component("rm", fn=rm_batched, weight=0.5)))
    problems = [Problem("t", p, "5", "exact") for p in prompts]
    scores, comp_scores, counts = score_batch(problems, comps, spec)
    assert comp_scores["rm"] == pytest.approx(a, abs=1e-5) and counts.errors == 0
    assert scores == pytest.approx([0.5 * x for x in a], abs=1e-5)


def test_rlpr_on_a_tiny_causal_lm_matches_a_manual_forward(tiny_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir / "lm")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir / "lm").eval()
    encode = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    fn = causal_lm_logprob_fn(model, encode, batch_size=2)
    contexts, targets = [PROMPT + "<think>x</think><answer>", PROMPT + "<answer>", "hi"], ["5", "42", "hello"]
    got = fn(contexts, targets)
    for c, t, row in zip(contexts, targets, got):
        ids = torch.tensor([encode(c) + encode(t)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        assert row == pytest.approx(logp[len(encode(c)) - 1 :].tolist(), abs=1e-5)
    completions = ["<think>a</think><answer>5</answer>", "<think>b</think><answer>"]
    reward = RLPRReward(fn)([PROMPT, PROMPT], completions, ["5", "5"])
    assert all(0.0 <= r <= 1.0 for r in reward)
    raw = rlpr_reward([PROMPT], ["<think>a</think><answer>"], ["5"], fn, debias=False)[0]
    target_logp = got[0][:0] + fn([PROMPT + "<think>a</think><answer>"], ["5"])[0]
    assert raw == pytest.approx(sum(math.exp(x) for x in target_logp) / len(encode("5")))
