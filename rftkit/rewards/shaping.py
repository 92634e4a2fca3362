"""Sequence-level reward shaping used by the RewardSpec: pure functions of (correct, length, text).

    cosine_length_reward  correct [N], lengths [N] -> [N]   (Yeo et al. 2025, arXiv:2502.03373)
    repetition_penalty    text -> [max_penalty, 0]          (same paper: n-gram repetition)
    overlong_penalty      lengths [N] -> [N] in [-1, 0]     (DAPO eq. 13: algos.shaping, reused)

The DAPO soft overlong punishment lives in `rftkit.algos.shaping.dapo_overlong_penalty`, where
the loop's `rl.overlong_cache` already applies it; `overlong_penalty` only adapts it to lists so
a RewardSpec can log it as its own component. Use one of the two, not both.
"""

from __future__ import annotations

import math

import torch

from rftkit.algos.shaping import dapo_overlong_penalty


def cosine(t: float, T: float, eta_min: float, eta_max: float) -> float:
    """CosFn(t, T, eta_min, eta_max) = eta_min + (eta_max - eta_min) * (1 + cos(t * pi / T)) / 2."""
    return eta_min + 0.5 * (eta_max - eta_min) * (1.0 + math.cos(t * math.pi / T))


def repetition_penalty(text: str, ngram: int, max_penalty: float) -> float:
    """max_penalty * (1 - distinct n-grams / n-grams) over whitespace words; 0 when too short.

    The reference implementation (eddycmu/demystify-long-cot, openrlhf/reward/repetition.py)
    adds this to the reward of wrong answers only; max_penalty <= 0."""
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be <= 0, got {max_penalty}")
    words = text.split()
    total = len(words) - ngram + 1
    if max_penalty == 0 or total <= 0:
        return 0.0
    distinct = len({tuple(words[i : i + ngram]) for i in range(total)})
    return max_penalty * (1.0 - distinct / total)


def cosine_length_reward(correct: list[bool], lengths: list[int], *, max_len: int, r0_correct: float = 2.0,
                         rL_correct: float = 1.0, r0_wrong: float = -10.0, rL_wrong: float = 0.0,
                         r_exceed: float = -10.0, margin: int = 0, texts: list[str] | None = None,
                         repetition_max_penalty: float = 0.0, ngram: int = 20) -> list[float]:
    """Cosine length-scaling reward of "Demystifying Long Chain-of-Thought Reasoning in LLMs".

    Yeo et al. 2025 (arXiv:2502.03373), checked against the authors' code
    (eddycmu/demystify-long-cot, openrlhf/reward/cosine.py):
        L + margin >= max_len:  r_exceed
        correct:                CosFn(L, max_len, rL_correct, r0_correct)   (shorter is better)
        wrong:                  CosFn(L, max_len, rL_wrong, r0_wrong)       (longer hurts less)
                                + repetition penalty of the text (when texts are given)
    so r(0) = r0_*, r(max_len) = rL_*. Defaults are the paper's (2, 1, -10, 0, -10).
    Shapes: correct [N] bool, lengths [N] (completion tokens) -> [N] float.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    out = []
    for i, (ok, n) in enumerate(zip(correct, lengths)):
        if n + margin >= max_len:
            out.append(r_exceed)
        elif ok:
            out.append(cosine(n, max_len, rL_correct, r0_correct))
        else:
            rep = repetition_penalty(texts[i], ngram, repetition_max_penalty) if texts is not None else 0.0
            out.append(cosine(n, max_len, rL_wrong, r0_wrong) + rep)
    return out


def overlong_penalty(lengths: list[int], max_len: int, cache_len: int) -> list[float]:
    """DAPO soft overlong punishment for a list of lengths (delegates to algos.shaping)."""
    return dapo_overlong_penalty(torch.tensor(lengths), max_len, cache_len).tolist()


__all__ = ["cosine", "cosine_length_reward", "repetition_penalty", "overlong_penalty"]
