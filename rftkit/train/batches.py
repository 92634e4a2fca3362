"""Turning problems and completions into padded token tensors (policy log-probs of them:
rftkit/model/logprobs.py).

Layout (see rftkit.types): right-padded [bos] + prompt + completion + [eos]; masks are 1 on
the completion tokens (including eos), the only positions an objective trains.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rftkit.data.pairs import Pair
from rftkit.envs.episodes import observation_ids
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.types import DemoBatch, Episode, PairBatch, Problem, RolloutBatch


def pad(rows: list[list[int]], value: float, dtype: torch.dtype) -> Tensor:
    """[len(rows), max_len] right-padded tensor (one tensor from padded lists: per-row
    tensors cost more than the padding here)."""
    t = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [value] * (t - len(r)) for r in rows], dtype=dtype).reshape(len(rows), t)


def demo_batch(tok, pairs: list[tuple[Problem, str | Episode]], max_len: int) -> DemoBatch | None:
    """(problem, completion) pairs as (tokens [M, T], mask [M, T]); None when there are none.
    A completion is a text or a multi-turn `Episode` (`completion_ids`).

    Rows longer than `max_len` are truncated from the end (mask follows), never dropped.
    """
    toks, masks, kept = [], [], []
    for p, d in pairs:
        prompt = problem_prompt_ids(tok, p)
        ids, trained = completion_ids(tok, p, d)
        toks.append((prompt + ids)[:max_len])
        masks.append(([0.0] * len(prompt) + trained)[:max_len])
        kept.append(p)
    if not toks:
        return None
    weights = torch.tensor([float(p.meta.get("demo_weight", 1.0)) for p in kept], dtype=torch.float32)
    return DemoBatch(tokens=pad(toks, tok.pad_id, torch.long), mask=pad(masks, 0.0, torch.float32), problems=kept,
                     weights=weights)


def completion_ids(tok, p: Problem, d: str | Episode) -> tuple[list[int], list[float]]:
    """A demonstration's tokens and mask, eos appended. A multi-turn demonstration (an `Episode`
    taken from a rollout, or the problem's demo with meta["demo_segments"] [[text, trained]])
    keeps its observations untrained: SFT on tool results would teach the model to write them."""
    if isinstance(d, Episode):
        segs = [(ids, model) for ids, model, _ in d.segments]
    elif p.env and p.meta.get("demo_segments") and "".join(t for t, _ in p.meta["demo_segments"]) == d:
        segs = [(tok.encode(t) if trained else observation_ids(tok, t), bool(trained))
                for t, trained in p.meta["demo_segments"]]
    else:
        segs = [(tok.encode(d), True)]
    ids = [i for seg, _ in segs for i in seg] + [tok.eos_id]
    return ids, [float(model) for seg, model in segs for _ in seg] + [1.0]


def _row_of(batch: RolloutBatch, row: int) -> tuple[list[int], list[float]]:
    """A rollout row's tokens and mask, cut after its last trained token."""
    mask = batch.mask[row]
    end = int(mask.nonzero().max()) + 1
    return batch.tokens[row, :end].tolist(), mask[:end].tolist()


def _text_row(tok, problem: Problem, text: str) -> tuple[list[int], list[float]]:
    prompt, completion = problem_prompt_ids(tok, problem), tok.encode(text) + [tok.eos_id]
    return prompt + completion, [0.0] * len(prompt) + [1.0] * len(completion)


def pair_batch(tok, pairs: list[Pair], batch: RolloutBatch | None, max_len: int) -> PairBatch | None:
    """Pairs as tokens [P, 2, T], mask [P, 2, T], rewards [P, 2]; None when there are none.

    A text completion is laid out like a demonstration; a rollout row index takes that row's
    tokens as sampled. Rows longer than `max_len` are truncated from the end (mask follows).
    """
    if not pairs:
        return None
    toks, masks = [], []
    for p in pairs:
        for side in (p.chosen, p.rejected):
            ids, mask = _row_of(batch, side) if isinstance(side, int) else _text_row(tok, p.problem, side)
            toks.append(ids[:max_len])
            masks.append(mask[:max_len])
    n = len(pairs)
    tokens = pad(toks, tok.pad_id, torch.long)
    return PairBatch(tokens=tokens.reshape(n, 2, -1), mask=pad(masks, 0.0, torch.float32).reshape(n, 2, -1),
                     rewards=torch.tensor([[p.chosen_reward, p.rejected_reward] for p in pairs], dtype=torch.float32),
                     problems=[p.problem for p in pairs])
