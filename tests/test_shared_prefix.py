"""The shared-prefix training forward against the plain one: values and gradients."""

import pytest
import torch

from rftkit.model import logprobs
from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.logprobs import completion_starts, rollout_logprobs, token_logprobs
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine

TOK = CharTokenizer()


def _batch(model, tok, prompts, n=4, new=10, seed=0):
    sp = SamplingParams(n=n, max_new_tokens=new, temperature=1.0, seed=seed)
    gen = KVCacheEngine(model, tok).generate(prompts, sp)
    return gen.tokens, gen.mask


def _grads(model, fn, tokens, mask):
    model.zero_grad()
    lp, ent = fn(tokens, mask)
    ((lp * mask).sum() + 0.1 * (ent * mask).sum()).backward()
    return lp.detach(), ent.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _compare(model, tokens, mask, temperature):
    plain = _grads(model, lambda t, m: token_logprobs(model, t, temperature), tokens, mask)
    fast = _grads(model, lambda t, m: rollout_logprobs(model, t, m, temperature), tokens, mask)
    assert torch.allclose(plain[0] * mask, fast[0] * mask, atol=1e-5)
    assert torch.allclose(plain[1] * mask, fast[1] * mask, atol=1e-4)
    assert plain[2].keys() == fast[2].keys() and plain[2]
    for k in plain[2]:
        assert torch.allclose(plain[2][k], fast[2][k], atol=1e-4, rtol=1e-3), k


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_builtin_gpt_shared_prefix_equals_plain_forward(temperature):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES["nano"]))
    prompts = [[TOK.bos_id] + TOK.encode(p) for p in ["add:12+3=", "x=", "sort:5,3,9,1="]]
    tokens, mask = _batch(model, TOK, prompts)
    _compare(model, tokens, mask, temperature)


def test_shared_path_is_taken_and_falls_back_without_sharing(monkeypatch):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES["nano"]))
    prompts = [[TOK.bos_id] + TOK.encode(p) for p in ["add:1+2=", "str:ab="]]
    calls = []
    real = logprobs._prefill
    monkeypatch.setattr(logprobs, "_prefill", lambda *a: calls.append(1) or real(*a))
    tokens, mask = _batch(model, TOK, prompts, n=3)
    rollout_logprobs(model, tokens, mask)
    assert calls == [1]
    tokens, mask = _batch(model, TOK, prompts, n=1)  # every prompt once: nothing to share
    rollout_logprobs(model, tokens, mask)
    assert calls == [1]


def test_completion_starts_reads_mask_and_prefix_mask():
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0.]])
    prefix = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0.]])
    assert completion_starts(mask).tolist() == [2, 3, 4]
    assert completion_starts(mask, prefix).tolist() == [2, 1, 4]


@pytest.mark.parametrize("flavour", ["qwen2", "llama"])
@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_hf_shared_prefix_equals_plain_forward(tmp_path, flavour, lora, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer

    from hf_fixtures import tiny_hf_model

    folder = tiny_hf_model(tmp_path, flavour)
    policy, tok = load_hf_policy(folder, device="cpu", lora=lora), load_hf_tokenizer(folder)
    prompts = [tok.encode(q) for q in ["What is 12 + 30?", "reverse abc", "hi"]]
    tokens, mask = _batch(policy, tok, prompts, n=3, new=8)
    policy.train()
    calls = []
    real = logprobs._prefill
    monkeypatch.setattr(logprobs, "_prefill", lambda *a: calls.append(1) or real(*a))
    _compare(policy, tokens, mask, 1.0)
    assert calls == [1]  # the shared path ran (not the fallback)


def test_frozen_logprobs_in_small_chunks_equal_one_pass(monkeypatch):
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES["nano"]))
    prompts = [[TOK.bos_id] + TOK.encode(p) for p in ["add:12+3=", "x=", "sort:5,3,9,1="]]
    tokens, mask = _batch(model, TOK, prompts, n=4)
    whole = logprobs.frozen_logprobs(model, tokens, mask)
    assert logprobs.rows_per_chunk(model, tokens, budget=5 * tokens.shape[1] * TOK.vocab_size) == 5
    monkeypatch.setattr(logprobs, "rows_per_chunk", lambda m, t: 5)  # 12 rows -> chunks of 5, 5, 2
    chunked = logprobs.frozen_logprobs(model, tokens, mask)
    assert torch.allclose(whole, chunked, atol=1e-6) and not chunked.requires_grad
    with torch.no_grad():
        assert torch.allclose(token_logprobs(model, tokens)[0] * mask, whole, atol=1e-5)
