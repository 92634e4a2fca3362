"""A Hugging Face tokenizer behind rftkit's Tokenizer protocol, with chat-template prompts.

rftkit trains only completion tokens (mask = 1 after the prompt), so rendering the prompt
through the model's chat template with `add_generation_prompt=True` is what makes "loss
only on assistant tokens" true: the prompt ends with the assistant header, the completion
is the assistant's answer followed by `eos_id` (the template's end-of-turn token, e.g.
`<|im_end|>` or `<|eot_id|>`), and nothing else is ever masked in.

Prompt ids: `prompt_ids(prompt)` replaces the built-in `[bos_id] + encode(prompt)`:
    - with a chat template: the template's text, encoded without adding special tokens
      (the template writes its own bos, e.g. Llama 3's `<|begin_of_text|>`); a bos is
      prepended only if the tokenizer has one and the template did not write it;
    - without a template (base models, `chat_template: false`): [bos] + encode(prompt) when
      the tokenizer has a bos, else encode(prompt) alone (Qwen-style tokenizers have none).
`bos_id` of a tokenizer without bos is its eos id (the document separator base models saw
in pretraining); `has_bos` tells the two cases apart. `problem_prompt_ids(tok, problem)`
works for both tokenizer kinds and for chat-format problems (`meta["messages"]`).

Images (vision-language models, rftkit/model/hf_vision.py): `load_hf_tokenizer` also loads a
VLM folder's processor (`processor`; a VLM folder without one is an error saying what to
copy). `prompt_ids(prompt, images=...)` renders the images as content parts before the text of
the first user turn, so the template writes one `<|vision_start|><|image_pad|><|vision_end|>`
per image, and each pad becomes the N placeholder ids that name its image (N = the processor's
expansion for that image's size): the ids equal the processor's `input_ids` with those pads in
place (`with_image_parts`, `expand_image_pads`). `decode` drops placeholder ids.

Tools: a problem's `meta["tools"]` (OpenAI-style function specs, `{"type": "function",
"function": {"name", "description", "parameters"}}`) reach the template as
`apply_chat_template(..., tools=tools)`, which is where the model learns of them (Qwen2.5 and
Hermes-style templates list them in the system prompt inside <tools></tools>). A template
that ignores them, or a tokenizer without a template, renders the prompt without them (a
warning, once); the built-in char tokenizer ignores tools.

Multi-turn contexts (rftkit/envs/episodes.py): after a model turn, which ended with eos (the
template's end-of-turn token, already in the context), `observation_ids(text)` gives the ids
from there to the next assistant turn's header: the rest of the template's turn separator,
`text` as a tool turn, the assistant header. They are read off the template itself, with a
sentinel assistant message S:

    full = apply_chat_template([user, assistant S, {role: tool, content: text}], add_generation_prompt=True)
    delta = full after S, less the leading eos text the model already wrote

e.g. for Qwen2.5, which renders a tool turn as a user turn:
"\n<|im_start|>user\n<tool_response>\n{text}\n</tool_response><|im_end|>\n<|im_start|>assistant\n".
So a context built turn by turn is the template's rendering of the whole conversation
(tests/test_hf_agentic.py checks it token for token). A template that cannot render role "tool"
(it raises, or the text does not appear) gets a "user" turn instead; without a template the
text is appended as is. A turn that a stop string ended (no eos): `eos_emitted=False` keeps
the template's end-of-turn text. The template is rendered for each observation (exact also for
templates that transform tool content, e.g. Llama 3.1's `tojson`; a render is well under a
millisecond); only which role renders is cached.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rftkit.model import hf_vision
from rftkit.model.vision import image_token_ids, text_ids
from rftkit.types import Image, Problem

Messages = list[dict[str, str]]
Tools = list[dict[str, Any]]
SENTINEL = "RFTKITSENTINEL"  # letters only: survives a template's trim or tojson of the content
log = logging.getLogger("rftkit.model")


class HFTokenizer:
    """Adapter: encode/decode without special tokens added; pad, bos, eos ids; vocab_size.

    system_prompt: added as the first (system) message of every rendered prompt that has
    none. chat_template: True (require one), False (never use one), "auto" (use it if the
    tokenizer has one). processor: a vision-language model's processor (hf_vision.py), which
    makes `prompt_ids(..., images=...)` work; None for text models.
    """

    def __init__(self, tokenizer, *, system_prompt: str | None = None, chat_template: bool | str = "auto",
                 processor=None) -> None:
        self.hf = tokenizer
        self.processor = processor
        if processor is not None:
            if not getattr(tokenizer, "chat_template", None) and getattr(processor, "chat_template", None):
                tokenizer.chat_template = processor.chat_template  # VLM repos may keep it with the processor only
            pad = getattr(processor, "image_token_id", None)
            self.image_pad_id = int(pad if pad is not None else tokenizer.convert_tokens_to_ids(processor.image_token))
        tokenizer.padding_side = "left"  # for anyone batching through the HF tokenizer directly
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; set one (tokenizer_config.json eos_token)")
        self.eos_id: int = int(tokenizer.eos_token_id)
        self.has_bos = tokenizer.bos_token_id is not None
        self.bos_id: int = int(tokenizer.bos_token_id) if self.has_bos else self.eos_id
        self.pad_id: int = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.eos_id
        self.vocab_size: int = len(tokenizer)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat_template is True and not has_template:
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        self.use_template = has_template if chat_template == "auto" else bool(chat_template)
        self.system_prompt = system_prompt
        self._obs_roles: dict[str, str | None] = {}  # observation role asked -> role the template renders
        self._warned: set[str] = set()
        self._tools_checked = False

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Special tokens (pad, eos, template markers) and image placeholders are dropped."""
        if self.processor is not None:  # only a VLM's rows hold image ids: text models skip the filter
            ids = text_ids(ids)
        return self.hf.decode(ids, skip_special_tokens=True)

    def messages(self, prompt: str | Messages, system_prompt: str | None = None) -> Messages:
        """A plain prompt becomes one user turn; the system prompt is added unless one is present."""
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        system = system_prompt if system_prompt is not None else self.system_prompt
        if system and not (msgs and msgs[0].get("role") == "system"):
            msgs = [{"role": "system", "content": system}] + msgs
        return msgs

    def render_prompt(self, prompt: str | Messages, system_prompt: str | None = None,
                      tools: Tools | None = None) -> str:
        """The prompt as text: chat template with the assistant header opened (and `tools`
        passed to it), or the plain text (tools ignored: there is no template to show them)."""
        if not self.use_template:
            if tools:
                self._warn_once("tools", "the tokenizer has no chat template: the prompt is rendered without tools")
            if isinstance(prompt, str):
                return prompt
            return "\n\n".join(m["content"] for m in self.messages(prompt, system_prompt))
        msgs = self.messages(prompt, system_prompt)
        if not tools:  # exactly the call without tools, so tool-less prompts render as they always did
            return self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        text = self.hf.apply_chat_template(msgs, tools=list(tools), tokenize=False, add_generation_prompt=True)
        if not self._tools_checked:  # once: does this template show tools at all?
            self._tools_checked = True
            if text == self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True):
                self._warn_once("tools", "the chat template ignores `tools`: the model does not see the tool schemas")
        return text

    def prompt_ids(self, prompt: str | Messages, system_prompt: str | None = None,
                   tools: Tools | None = None, images: tuple[Image, ...] | list[Image] = ()) -> list[int]:
        """Token ids of the rendered prompt, bos handled (see the module docstring). images: a
        VLM's images, rendered as content parts before the text and expanded into placeholder
        ids that name them (rftkit/model/hf_vision.py)."""
        if images:
            prompt = self._image_prompt(prompt, system_prompt, len(images))
        ids = self.encode(self.render_prompt(prompt, system_prompt, tools))
        if self.has_bos and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        if not ids:  # an empty prompt without bos: give the model one token to condition on
            ids = [self.bos_id]
        if images:
            ids = expand_image_pads(ids, self.image_pad_id, list(images), hf_vision.image_processor_of(self.processor))
        return ids

    def _image_prompt(self, prompt: str | Messages, system_prompt: str | None, n: int) -> str | Messages:
        """The prompt with n images: image parts in the first user turn, or (no template) the
        model's image markup in front of the text."""
        if self.processor is None:
            raise ValueError("a prompt has images, but model.path is a text-only model (no image processor): "
                             "use a vision-language model such as Qwen2-VL, or the built-in VLM (model.vision)")
        if self.use_template:
            return with_image_parts(self.messages(prompt, system_prompt), n)
        text = prompt if isinstance(prompt, str) else "\n\n".join(
            str(m["content"]) for m in self.messages(prompt, system_prompt))
        return image_markup(self) * n + text

    def observation_ids(self, text: str, role: str = "tool", *, eos_emitted: bool = True) -> list[int]:
        """Ids that follow a model turn: `text` as a `role` turn of the template, then the next
        assistant header (see the module docstring). eos_emitted=False (a stop string, not
        eos, ended the model's turn) keeps the template's end-of-turn text in front."""
        used = self._observation_role(role) if self.use_template else None
        if used is None:
            return self.encode(text)
        return self.encode(self._turn_delta(text, used, eos_emitted))

    def _turn_delta(self, text: str, role: str, eos_emitted: bool = True) -> str:
        """The template's text after an assistant turn: closing it, `text` as `role`, the next header."""
        msgs = [{"role": "user", "content": "?"}, {"role": "assistant", "content": SENTINEL},
                {"role": role, "content": text}]
        full = self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        delta = full[full.index(SENTINEL) + len(SENTINEL):]
        eos = self.hf.eos_token
        if eos_emitted and eos and delta.startswith(eos):  # the model wrote it: it ends the turn in the context
            delta = delta[len(eos):]
        return delta

    def _observation_role(self, role: str) -> str | None:
        """`role` if the template renders it, else "user", else None (cached per role)."""
        if role not in self._obs_roles:
            self._obs_roles[role] = next((r for r in dict.fromkeys((role, "user")) if self._renders(r)), None)
            if self._obs_roles[role] != role:
                self._warn_once(f"role:{role}", f"the chat template does not render role {role!r}: observations "
                                f"are {'user turns' if self._obs_roles[role] else 'appended as plain text'}")
        return self._obs_roles[role]

    def _renders(self, role: str) -> bool:
        probe = "rftkitprobe"
        try:
            return probe in self._turn_delta(probe, role)
        except Exception:  # templates raise on roles they do not know (e.g. strict user/assistant alternation)
            return False

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def problem_prompt_ids(tok, problem: Problem) -> list[int]:
    """Prompt ids of a problem for either tokenizer kind (built-in char or `HFTokenizer`), with
    the problem's `meta["tools"]` in the chat template's prompt (the char tokenizer ignores them)."""
    if hasattr(tok, "prompt_ids"):
        kw = _tools_kw(problem.meta.get("tools"))
        if problem.images:  # only then: a text tokenizer's prompt_ids needs no images knob
            kw["images"] = problem.images
        return tok.prompt_ids(problem.meta.get("messages") or problem.prompt, **kw)
    return [tok.bos_id] + image_prefix(tok, problem) + tok.encode(problem.prompt)


def image_prefix(tok, problem: Problem) -> list[int]:
    """The built-in VLM's layout: every image's tokens (rftkit/model/vision.py), then the text."""
    if not problem.images:
        return []
    if not getattr(tok, "image_tokens", 0):
        raise ValueError(f"a problem of {problem.source or problem.task!r} has images, but the model is text-only: "
                         f"set model.vision (the built-in VLM) or model.path to a vision-language model")
    return [i for im in problem.images for i in image_token_ids(im, tok.image_tokens)]


def render_ids(tok, prompt: str | Messages, tools: Tools | None = None) -> list[int]:
    """Prompt ids of a text or chat prompt for either tokenizer kind (an environment's first
    observation); the built-in tokenizer joins chat messages' contents with blank lines and
    ignores tools."""
    if hasattr(tok, "prompt_ids"):
        return tok.prompt_ids(prompt, **_tools_kw(tools))
    text = prompt if isinstance(prompt, str) else "\n\n".join(str(m.get("content", "")) for m in prompt)
    return [tok.bos_id] + tok.encode(text)


def with_image_parts(msgs: list[dict], n: int) -> list[dict]:
    """Messages whose first user turn starts with n image parts; messages that already hold
    exactly n image parts are kept as they are."""
    have = sum(1 for m in msgs if isinstance(m.get("content"), list)
               for part in m["content"] if isinstance(part, dict) and part.get("type") == "image")
    if have == n:
        return msgs
    if have:
        raise ValueError(f"the prompt's messages hold {have} image parts for {n} images")
    out, done = [], False
    for m in msgs:
        if not done and m.get("role") == "user":
            content = m.get("content")
            text = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
            m, done = {**m, "content": [{"type": "image"}] * n + text}, True
        out.append(m)
    if not done:
        raise ValueError("a prompt with images needs a user message to put them in")
    return out


def image_markup(tok) -> str:
    """One image in a prompt without a chat template: Qwen's <|vision_start|>pad<|vision_end|>."""
    pad = tok.hf.convert_ids_to_tokens(tok.image_pad_id)
    start, end = "<|vision_start|>", "<|vision_end|>"
    vocab = tok.hf.get_vocab()
    return f"{start}{pad}{end}" if start in vocab and end in vocab else pad


def expand_image_pads(ids: list[int], pad_id: int, images, image_processor) -> list[int]:
    """Each of the len(images) pad ids -> that image's placeholder ids (rftkit/model/vision.py)."""
    found = ids.count(pad_id)
    if found != len(images):
        raise ValueError(f"the rendered prompt has {found} image tokens for {len(images)} images: the chat template "
                         f"must render {{'type': 'image'}} content parts (a vision-language model's template does)")
    out, k = [], 0
    for i in ids:
        if i == pad_id:
            out += image_token_ids(images[k], hf_vision.image_token_count(image_processor, images[k]))
            k += 1
        else:
            out.append(i)
    return out


def _tools_kw(tools) -> dict[str, Any]:
    """tools= only when there are some: a `prompt_ids` without the knob keeps working."""
    if not tools:
        return {}
    if not isinstance(tools, (list, tuple)) or not all(isinstance(t, dict) for t in tools):
        raise ValueError(f"meta['tools'] should be a list of function specs ({{'type': 'function', 'function': "
                         f"{{'name': ..., 'parameters': ...}}}}), got {type(tools).__name__}")
    return {"tools": list(tools)}


def load_hf_tokenizer(path: str | Path, *, system_prompt: str | None = None, chat_template: bool | str = "auto",
                      trust_remote_code: bool = False) -> HFTokenizer:
    """`AutoTokenizer.from_pretrained(path)` wrapped as an `HFTokenizer`, with the processor of a
    vision-language model (a VLM folder without one is a FileNotFoundError saying what to do)."""
    from rftkit.model.hf import require

    tf = require("transformers")
    tok = tf.AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    processor = hf_vision.processor_for(path, tok, trust_remote_code)
    return HFTokenizer(tok, system_prompt=system_prompt, chat_template=chat_template, processor=processor)


__all__ = ["HFTokenizer", "expand_image_pads", "problem_prompt_ids", "render_ids", "load_hf_tokenizer",
           "with_image_parts"]
