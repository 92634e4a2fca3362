"""Tiny models for the vLLM engine tests (see conftest.py for why these shapes)."""

from pathlib import Path

import torch

from rftkit.model.hf import load_hf_policy
from rftkit.model.hf_tokenizer import load_hf_tokenizer
from rftkit.model.io import build_model
from rftkit.model.tokenizer import CharTokenizer

from hf_fixtures import tiny_tokenizer


def tiny_qwen2_h32(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer Qwen2 (hidden 64, 2 heads of 32, 1 KV head, tied embeddings, 256
    positions) with the fixtures' byte-level BPE tokenizer and Qwen chat template."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    tok = tiny_tokenizer("qwen2")
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True, initializer_range=0.2)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def qwen_policy(folder: Path, **kw):
    return load_hf_policy(folder, device="cpu", dtype="float32", **kw), load_hf_tokenizer(folder)


def micro_gpt(seed: int = 0):
    """The built-in micro model with weights wide enough (std 0.1) that greedy text varies
    (its own init, std 0.02, repeats one character)."""
    tok = CharTokenizer()
    torch.manual_seed(seed)
    model = build_model("micro", 128, tok)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    return model, tok
