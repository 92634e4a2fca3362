"""Token sampling: temperature, top-k and top-p (nucleus) filtering of next-token logits."""

from __future__ import annotations

import torch
from torch import Tensor


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Mask logits [B, V] outside the top-k and the top-p nucleus with -inf.

    top_k <= 0 and top_p >= 1 disable the respective filter. The most likely token is
    always kept, so a row is never empty.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # mass before this token already > p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def sample_next(logits: Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Pick next tokens from logits [B, V]; return (tokens [B], logp [B]).

    logp is the log-probability of the chosen token under the temperature-scaled,
    *unfiltered* distribution: that is the policy the trainer recomputes, so the PPO ratio
    compares like with like (temperature 0 reports the temperature-1 log-prob).
    """
    if temperature <= 0:
        tokens = logits.argmax(-1)
        logp = logits.float().log_softmax(-1)
    else:
        scaled = logits.float() / temperature
        logp = scaled.log_softmax(-1)
        probs = filter_logits(scaled, top_k, top_p).softmax(-1)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)
