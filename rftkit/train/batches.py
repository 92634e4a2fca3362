"""Turning problems and completions into padded token tensors, and policy log-probs.

Layout (see rftkit.types): right-padded [bos] + prompt + completion + [eos]; masks are 1 on
the completion tokens (including eos), the only positions an objective trains.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.types import DemoBatch, Problem


def pad(rows: list[list[int]], value: float, dtype: torch.dtype) -> Tensor:
    """[len(rows), max_len] right-padded tensor (one tensor from padded lists: per-row
    tensors cost more than the padding here)."""
    t = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [value] * (t - len(r)) for r in rows], dtype=dtype).reshape(len(rows), t)


def demo_batch(tok, pairs: list[tuple[Problem, str]], max_len: int) -> DemoBatch | None:
    """(problem, completion) pairs as (tokens [M, T], mask [M, T]); None when there are none.

    Rows longer than `max_len` are truncated from the end (mask follows), never dropped.
    """
    toks, masks, kept = [], [], []
    for p, d in pairs:
        prompt = problem_prompt_ids(tok, p)
        completion = tok.encode(d) + [tok.eos_id]
        row = (prompt + completion)[:max_len]
        toks.append(row)
        masks.append(([0.0] * len(prompt) + [1.0] * len(completion))[:max_len])
        kept.append(p)
    if not toks:
        return None
    return DemoBatch(tokens=pad(toks, tok.pad_id, torch.long), mask=pad(masks, 0.0, torch.float32), problems=kept)


def token_logprobs(model, tokens: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-token log-probs and entropies of `tokens` under `model`.

    tokens [N, T] -> (logp [N, T], entropy [N, T]); logp[:, t] = log p(tokens[:, t] | tokens[:, :t])
    with logits divided by `temperature` (the sampling temperature, so the ratio compares the
    same distribution the engine sampled from); position 0 is 0.
    """
    lp, ent, _ = token_distributions(model, tokens, temperature)
    return lp, ent


def token_distributions(model, tokens: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """`token_logprobs` plus the full next-token log-softmax it is computed from.

    tokens [N, T] -> (logp [N, T], entropy [N, T], next_logp [N, T-1, V]) with
    next_logp[:, t] = log p(. | tokens[:, :t+1]), the distribution of tokens[:, t+1]. It is the
    tensor autograd keeps for the backward pass anyway, so returning it costs no memory; it is not
    padded to [N, T, V] because that copy would (objectives that sample from it: `otr`).
    """
    logits = model(tokens[:, :-1]).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logprobs = logits.log_softmax(-1)
    lp = logprobs.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    ent = -(logprobs.exp() * logprobs).sum(-1)
    zero = lp.new_zeros(tokens.shape[0], 1)
    return torch.cat([zero, lp], 1), torch.cat([zero, ent], 1), logprobs
