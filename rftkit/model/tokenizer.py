"""Character-level tokenizer of the built-in model.

The alphabet is fixed (not learned from data) so that any checkpoint of the built-in model
reads any task's text. Ids 0-3 are the special tokens; unknown characters map to <unk>.
The same protocol (`encode`, `decode`, ids, `vocab_size`) is what a Hugging Face tokenizer
wrapper provides, so rollout and training code never know which one they hold.
"""

from __future__ import annotations

from typing import Protocol

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz+-*/=()<>:;,.#?!| \n_[]"


class Tokenizer(Protocol):
    pad_id: int
    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class CharTokenizer:
    """One id per character of ALPHABET, after the four specials. `image_tokens`: tokens per
    image of the model it serves (0: a text-only model; set when a VLM is built or loaded)."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3
    image_tokens = 0

    def __init__(self, alphabet: str = ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("tokenizer alphabet has repeated characters")
        self.alphabet = alphabet
        self._to_id = {ch: i + len(SPECIALS) for i, ch in enumerate(alphabet)}
        self.vocab_size = len(SPECIALS) + len(alphabet)

    def encode(self, text: str) -> list[int]:
        return [self._to_id.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: list[int]) -> str:
        """Specials and image tokens are dropped, except <unk> which reads as '?'."""
        out = []
        for i in ids:
            if len(SPECIALS) <= i < self.vocab_size:
                out.append(self.alphabet[i - len(SPECIALS)])
            elif i == self.unk_id:
                out.append("?")
        return "".join(out)
