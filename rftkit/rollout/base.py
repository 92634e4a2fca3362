"""The Generator protocol: anything that turns prompts into sampled completions.

Implementations: `KVCacheEngine` (ours, "kv", any torch device), `HFGenerateEngine`
("hf_generate", transformers' `generate`), `VLLMEngine` ("vllm"), and the Ray rollout service
(rftkit/dist/rollout_workers.py) over any of them. All return the same `Generation`, so the
loop never knows which one it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rftkit.registry import Registry
from rftkit.types import Generation


@dataclass(frozen=True)
class SamplingParams:
    """n samples per prompt; temperature 0 is greedy; top_k 0 / top_p 1 disable filters."""

    n: int = 1
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0


class Generator(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Generation:
        """prompts: token ids (with bos). Returns N = len(prompts) * params.n rows."""
        ...


GENERATORS: Registry[type] = Registry("generator")
