"""Tiny random-weight Hugging Face models and tokenizers, built locally (nothing downloaded).

`tiny_qwen2(dir)` / `tiny_llama(dir)` save a 2-layer, hidden-64 model plus a byte-level BPE
tokenizer (trained with the `tokenizers` library on a few lines) with a chat template, in
the layout a user's local model folder has, so tests load them through the same path
(`load_hf_policy`, `load_hf_tokenizer`). The Qwen2 flavour has no bos token and ties its
embeddings (like Qwen2.5); the Llama flavour has a bos token that its template emits (like
Llama 3) and no pad token. `tiny_qwen2_tools(dir)` is the Qwen2 flavour with Qwen2.5's
tool-calling chat template (tool schemas in the system prompt inside <tools></tools>,
assistant `tool_calls` as <tool_call> JSON, role "tool" rendered as a user turn wrapped in
<tool_response>) and a tokenizer that also saw those texts. The tags are plain text here
(Qwen2.5 adds them as non-special tokens); the byte-level pre-tokenizer splits them at their
punctuation, so each costs a few tokens.
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

TOOL_CORPUS = [
    '<tool_call>\n{"name": "calc", "arguments": {"expr": "12*34"}}\n</tool_call>',
    "<tool_response>\n408\n</tool_response>",
    "# Tools\n\nYou may call one or more functions to assist with the user query.",
    "You are provided with function signatures within <tools></tools> XML tags:",
    '{"type": "function", "function": {"name": "calc", "description": "Evaluate arithmetic",'
    ' "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}}}',
    "For each function call, return a json object with function name and arguments within",
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


# Qwen2.5-Instruct's template (tokenizer_config.json of Qwen/Qwen2.5-0.5B-Instruct); only the default system
# text is shortened and long lines are split (same output)
QWEN_TOOLS_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n" }}
    {{- "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments " }}
    {{- "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n" }}
    {{- "{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first)
           or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def _bpe(specials: list[str], vocab_size: int = 320, corpus: list[str] = CORPUS):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return tok


def tiny_tokenizer(flavour: str):
    """A PreTrainedTokenizerFast: flavour 'qwen2' (no bos), 'qwen2_tools' (qwen2 with the
    tool-calling template) or 'llama' (bos, no pad)."""
    from transformers import PreTrainedTokenizerFast

    if flavour == "qwen2_tools":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        kw = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN_TOOLS_TEMPLATE)
        return PreTrainedTokenizerFast(tokenizer_object=_bpe(specials, 400, CORPUS + TOOL_CORPUS), **kw)
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
    if flavour.startswith("qwen2"):
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


def tiny_qwen2_tools(folder, seed: int = 0, max_pos: int = 1024) -> Path:
    """The Qwen2 flavour with Qwen2.5's tool-calling chat template (see the module docstring)."""
    return tiny_hf_model(folder, "qwen2_tools", seed, max_pos)
