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
"""

from __future__ import annotations

from pathlib import Path

from rftkit.types import Problem

Messages = list[dict[str, str]]


class HFTokenizer:
    """Adapter: encode/decode without special tokens added; pad, bos, eos ids; vocab_size.

    system_prompt: added as the first (system) message of every rendered prompt that has
    none. chat_template: True (require one), False (never use one), "auto" (use it if the
    tokenizer has one).
    """

    def __init__(self, tokenizer, *, system_prompt: str | None = None, chat_template: bool | str = "auto") -> None:
        self.hf = tokenizer
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

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Special tokens (pad, eos, template markers) are dropped."""
        return self.hf.decode(ids, skip_special_tokens=True)

    def messages(self, prompt: str | Messages, system_prompt: str | None = None) -> Messages:
        """A plain prompt becomes one user turn; the system prompt is added unless one is present."""
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        system = system_prompt if system_prompt is not None else self.system_prompt
        if system and not (msgs and msgs[0].get("role") == "system"):
            msgs = [{"role": "system", "content": system}] + msgs
        return msgs

    def render_prompt(self, prompt: str | Messages, system_prompt: str | None = None) -> str:
        """The prompt as text: chat template with the assistant header opened, or the plain text."""
        if not self.use_template:
            if isinstance(prompt, str):
                return prompt
            return "\n\n".join(m["content"] for m in self.messages(prompt, system_prompt))
        return self.hf.apply_chat_template(self.messages(prompt, system_prompt), tokenize=False,
                                           add_generation_prompt=True)

    def prompt_ids(self, prompt: str | Messages, system_prompt: str | None = None) -> list[int]:
        """Token ids of the rendered prompt, bos handled (see the module docstring)."""
        ids = self.encode(self.render_prompt(prompt, system_prompt))
        if self.has_bos and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        if not ids:  # an empty prompt without bos: give the model one token to condition on
            ids = [self.bos_id]
        return ids


def problem_prompt_ids(tok, problem: Problem) -> list[int]:
    """Prompt ids of a problem for either tokenizer kind (built-in char or `HFTokenizer`)."""
    if hasattr(tok, "prompt_ids"):
        return tok.prompt_ids(problem.meta.get("messages") or problem.prompt)
    return [tok.bos_id] + tok.encode(problem.prompt)


def render_ids(tok, prompt: str | Messages) -> list[int]:
    """Prompt ids of a text or chat prompt for either tokenizer kind (an environment's first
    observation); the built-in tokenizer joins chat messages' contents with blank lines."""
    if hasattr(tok, "prompt_ids"):
        return tok.prompt_ids(prompt)
    text = prompt if isinstance(prompt, str) else "\n\n".join(str(m.get("content", "")) for m in prompt)
    return [tok.bos_id] + tok.encode(text)


def load_hf_tokenizer(path: str | Path, *, system_prompt: str | None = None, chat_template: bool | str = "auto",
                      trust_remote_code: bool = False) -> HFTokenizer:
    """`AutoTokenizer.from_pretrained(path)` wrapped as an `HFTokenizer`."""
    from rftkit.model.hf import require

    tf = require("transformers")
    tok = tf.AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    return HFTokenizer(tok, system_prompt=system_prompt, chat_template=chat_template)


__all__ = ["HFTokenizer", "problem_prompt_ids", "render_ids", "load_hf_tokenizer"]
