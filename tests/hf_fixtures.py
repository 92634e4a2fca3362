"""Tiny random-weight Hugging Face models and tokenizers, built locally (nothing downloaded).

`tiny_qwen2(dir)` / `tiny_llama(dir)` save a 2-layer, hidden-64 model plus a byte-level BPE
tokenizer (trained with the `tokenizers` library on a few lines) with a chat template, in
the layout a user's local model folder has, so tests load them through the same path
(`load_hf_policy`, `load_hf_tokenizer`). The Qwen2 flavour has no bos token and ties its
embeddings (like Qwen2.5); the Llama flavour has a bos token that its template emits (like
Llama 3) and no pad token.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "What is 12 + 30? The answer is #42.",
    "Question: reverse abc. Answer: cba",
    "system user assistant You are a helpful assistant.",
    "0123456789 + - * / = ( ) # , . ? !",
    "the quick brown fox jumps over the lazy dog",
    "Let's think step by step. First add the tens, then the ones.",
]

QWEN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _bpe(specials: list[str], vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def tiny_tokenizer(flavour: str):
    """A PreTrainedTokenizerFast: flavour 'qwen2' (no bos) or 'llama' (bos, no pad)."""
    from transformers import PreTrainedTokenizerFast

    if flavour == "qwen2":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        kw = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN_TEMPLATE)
    else:
        specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
        kw = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", chat_template=LLAMA_TEMPLATE)
    return PreTrainedTokenizerFast(tokenizer_object=_bpe(specials), **kw)


def _config(flavour: str, tok, max_pos: int):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_pos,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, initializer_range=0.2)
    if flavour == "qwen2":
        return Qwen2Config(tie_word_embeddings=True, bos_token_id=None, **common)
    return LlamaConfig(tie_word_embeddings=False, bos_token_id=tok.bos_token_id, **common)


def tiny_hf_model(folder: str | Path, flavour: str = "qwen2", seed: int = 0, max_pos: int = 256) -> Path:
    """Save a random tiny model of `flavour` with its tokenizer in `folder`; return the folder."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tok = tiny_tokenizer(flavour)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(flavour, tok, max_pos))
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_qwen2(folder, seed: int = 0) -> Path:
    return tiny_hf_model(folder, "qwen2", seed)


def tiny_llama(folder, seed: int = 0) -> Path:
    return tiny_hf_model(folder, "llama", seed)
