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

`tiny_qwen2_vl(dir)` saves a tiny Qwen2-VL (or Qwen2.5-VL) vision-language model in a hub
repo's layout: model, tokenizer with Qwen2-VL's chat template, preprocessor_config.json;
`qwen2_vl_processor(dir)` builds transformers' own processor for it (the tests' reference).
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


# Qwen2-VL-Instruct's template (chat_template.json of Qwen/Qwen2-VL-2B-Instruct): image content parts become
# <|vision_start|><|image_pad|><|vision_end|>, which the processor expands to one pad per merged patch
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                     "<|image_pad|>", "<|video_pad|>"]


def tiny_qwen2_vl(folder, seed: int = 0, max_pos: int = 512, processor: bool = True,
                  flavour: str = "qwen2_vl") -> Path:
    """A random tiny Qwen2-VL (flavour "qwen2_vl") or Qwen2.5-VL ("qwen2_5_vl": windowed vision
    attention, SwiGLU vision MLP) with its tokenizer and image processor, saved in `folder`:
    2 text layers of width 64, a 1-block vision tower of width 32 on 8-pixel patches merged 2x2.
    The image processor keeps images between 16x16 and 64x64 pixels, so an image costs 1..16
    tokens (a 32x32 image: 4). processor=False leaves out the image processor's files (a VLM
    folder that cannot take images)."""
    import transformers

    folder = Path(folder)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=_bpe(QWEN2_VL_SPECIALS), eos_token="<|im_end|>",
                                               pad_token="<|endoftext|>", chat_template=QWEN2_VL_TEMPLATE)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN2_VL_SPECIALS}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_pos,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                initializer_range=0.2)
    vision = dict(depth=1, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                  initializer_range=0.2)
    if flavour == "qwen2_vl":
        vision.update(embed_dim=32, hidden_size=64, mlp_ratio=2)
        config_cls, model_cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    else:
        vision.update(hidden_size=32, intermediate_size=64, out_hidden_size=64, window_size=32,
                      fullatt_block_indexes=[])
        config_cls, model_cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
    config = config_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)  # with chat_template.jinja
    if processor:  # the layout of a hub Qwen2-VL repo: preprocessor_config.json next to the tokenizer files
        _qwen2_vl_image_processor().save_pretrained(folder)
    return folder


def _qwen2_vl_image_processor():
    import warnings

    from transformers import Qwen2VLImageProcessor

    with warnings.catch_warnings():  # without torchvision the PIL image processor stands in (same numbers)
        warnings.simplefilter("ignore")
        return Qwen2VLImageProcessor(min_pixels=16 * 16, max_pixels=64 * 64, patch_size=8, merge_size=2,
                                     temporal_patch_size=2)


def qwen2_vl_processor(folder):
    """transformers' own `Qwen2VLProcessor` for a `tiny_qwen2_vl` folder: the reference that rftkit's
    prompts and engine are compared with. transformers builds it only with a video processor, which
    needs torchvision; without torchvision a stand-in that handles no video is passed (this processor
    never sees videos), after registering the video base class its argument check looks up."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLProcessor

    tok, images = AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
    try:
        return Qwen2VLProcessor(image_processor=images, tokenizer=tok, video_processor=transformers.AutoVideoProcessor
                                .from_pretrained(folder), chat_template=tok.chat_template)
    except Exception:  # no torchvision
        import transformers.processing_utils as pu
        from transformers.video_processing_utils import VideoProcessorMixin

        pu.transformers_module.VideoProcessorMixin = VideoProcessorMixin
        no_video = type("NoVideoProcessor", (VideoProcessorMixin,), {})()
        return Qwen2VLProcessor(image_processor=images, tokenizer=tok, video_processor=no_video,
                                chat_template=tok.chat_template)
