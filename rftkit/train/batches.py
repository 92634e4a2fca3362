"""Turning problems and completions into padded token tensors (policy log-probs of them:
rftkit/model/logprobs.py).

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
