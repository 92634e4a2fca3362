"""Log-probs of token sequences under a policy: the plain forward, the shared-prefix forward.

Any model with the built-in interface (`forward(ids, positions, key_mask, cache) -> logits`,
rftkit/model/gpt.py: the built-in GPT or a Hugging Face policy from hf.py) goes in. Tokens are
right-padded [N, T] (rftkit.types); per-token outputs align with them: logp[:, t] =
log p(tokens[:, t] | tokens[:, :t]), 0 at position 0.

- `token_logprobs` / `token_distributions`: the plain forward, every row run whole.
- `rollout_logprobs`: the same values at every trained position with each distinct prompt run
  once (shared-prefix forward, below).
- `frozen_logprobs`: no-grad log-probs of the trained tokens in memory-bounded chunks of rows
  (`rows_per_chunk`).
- `left_pad`: the left-padded prompt layout (ids, key mask, RoPE positions) that the rollout
  engine and the shared-prefix forward both prefill with.

Shared-prefix forward. A GRPO group is G completions of one prompt. The plain training forward
(`token_logprobs`) runs the prompt G times; here the distinct prompts run once, their
keys/values are copied out to every row of the group, and only the completions run per row.
Gradients flow back through the copy (index_select sums the G rows' contributions), so the
result and its gradient equal the plain forward's (tested). This is the idea of Prefix
Grouper (Liu et al. 2025, "Prefix Grouper: Efficient GRPO Training through Shared-Prefix
Forward"); with prompts as long as completions it removes close to half the training compute.

It works with any model of the built-in interface whose cache keeps the autograd graph: the
built-in GPT (through `ConcatCache`, below) and Hugging Face policies (transformers'
`DynamicCache` concatenates) unless gradient checkpointing is on (transformers then
switches the cache off). Otherwise, or when no two rows share a prompt, it falls back to
`token_logprobs`.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    # Image tokens (prompt only, never trained) lie above the vocabulary: clamp to gather something.
    lp = logprobs.gather(-1, tokens[:, 1:, None].clamp(max=logprobs.shape[-1] - 1)).squeeze(-1)
    ent = -(logprobs.exp() * logprobs).sum(-1)
    zero = lp.new_zeros(tokens.shape[0], 1)
    return torch.cat([zero, lp], 1), torch.cat([zero, ent], 1), logprobs


def left_pad(prompts: list, plen: int, extra: int, pad_id: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Prompts left-padded to plen: ids [B, plen], key_mask [B, plen + extra] (True on real
    prompt tokens; the `extra` slots are for tokens to come), positions [B, plen] (0 at each
    row's first real token, so a row's RoPE positions do not depend on its padding)."""
    ids = torch.full((len(prompts), plen), pad_id, dtype=torch.long, device=device)
    key_mask = torch.zeros((len(prompts), plen + extra), dtype=torch.bool, device=device)
    for i, r in enumerate(prompts):
        ids[i, plen - len(r):] = torch.tensor(list(r), dtype=torch.long, device=device)
        key_mask[i, plen - len(r):plen] = True
    return ids, key_mask, (key_mask[:, :plen].long().cumsum(1) - 1).clamp(min=0)


class ConcatCache:
    """A KV cache that concatenates instead of writing into a buffer, so that backward works
    through it (the built-in `KVCache` writes in place). Keys/values [B, H, T, Dh] per layer."""

    def __init__(self) -> None:
        self.k: dict[int, Tensor] = {}
        self.v: dict[int, Tensor] = {}
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if layer in self.k:
            k, v = torch.cat([self.k[layer], k], 2), torch.cat([self.v[layer], v], 2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def select(self, rows: Tensor) -> None:
        self.k = {i: t.index_select(0, rows) for i, t in self.k.items()}
        self.v = {i: t.index_select(0, rows) for i, t in self.v.items()}


def _grad_cache(model, batch: int, max_len: int):
    """A cache the backward can go through, or None if the model has none."""
    if getattr(model, "is_hf", False):
        hf = model.hf_model
        flag = ("is_activation_checkpointing" if hasattr(hf, "is_activation_checkpointing")
                else "is_gradient_checkpointing")
        if getattr(hf, flag, False) and model.training:
            return None  # transformers turns use_cache off under checkpointing
        return model.new_cache(batch, max_len)
    if hasattr(model, "blocks") and hasattr(model, "new_cache"):  # the built-in GPT
        return ConcatCache()
    return None


def completion_starts(mask: Tensor, prefix_mask: Tensor | None = None) -> Tensor:
    """[N]: the first trained position of each row (mask or forced prefix), T if none."""
    trained = mask > 0 if prefix_mask is None else (mask > 0) | (prefix_mask > 0)
    t = mask.shape[1]
    return torch.where(trained.any(1), trained.int().argmax(1), torch.full_like(trained[:, 0], t, dtype=torch.long))


def _group(tokens: Tensor, starts: Tensor) -> tuple[list[list[int]], Tensor]:
    """Distinct prompts (tokens before each row's start) and each row's index into them."""
    index: dict[tuple[int, ...], int] = {}
    rows = tokens.tolist()
    inverse = [index.setdefault(tuple(r[:s]), len(index)) for r, s in zip(rows, starts.tolist())]
    return [list(k) for k in index], torch.tensor(inverse, device=tokens.device)


def rollout_logprobs(model, tokens: Tensor, mask: Tensor, temperature: float = 1.0,
                     prefix_mask: Tensor | None = None, min_share: float = 1.5) -> tuple[Tensor, Tensor]:
    """tokens [N, T] (right-padded prompt + completion), mask [N, T] -> (logp [N, T], entropy [N, T]).

    Equal to `token_logprobs` at every trained position (mask or prefix_mask); positions
    before a row's first trained token hold 0 here. Uses the shared-prefix forward when
    rows per distinct prompt >= min_share and the model's cache allows it.
    """
    n, t = tokens.shape
    starts = completion_starts(mask, prefix_mask)
    if n == 0 or bool((starts < 1).any()) or bool((starts >= t).any()):
        return token_logprobs(model, tokens, temperature)
    prompts, inverse = _group(tokens, starts)
    p_len = max(len(p) for p in prompts)
    width = int((t - starts).max())  # completion block: the longest row's tail
    fits = p_len + width <= model.cfg.max_seq_len if hasattr(model, "cfg") else False
    cache = _grad_cache(model, len(prompts), p_len + width) if fits and n >= min_share * len(prompts) else None
    if cache is None:
        return token_logprobs(model, tokens, temperature)
    last, key_mask = _prefill(model, prompts, p_len, width, cache, tokens.device)
    cache.select(inverse)
    key_mask = key_mask[inverse]
    key_mask[:, p_len:] = True  # completions are right-padded: a real token never sees a later pad
    j = torch.arange(width, device=tokens.device)
    src = (starts[:, None] + j).clamp(max=t - 1)
    comp = tokens.gather(1, src)  # [N, width]
    logits = last.index_select(0, inverse)[:, None]
    if width > 1:
        pos = (starts[:, None] + j[:-1]).clamp(max=t - 1)  # past a row's end: padding, any position
        out = model(comp[:, :-1], positions=pos, key_mask=key_mask, cache=cache)
        logits = torch.cat([logits, out], 1)  # [N, width, V]: the prediction of comp[:, j]
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logprobs = logits.log_softmax(-1)
    lp = logprobs.gather(-1, comp[..., None]).squeeze(-1)
    ent = -(logprobs.exp() * logprobs).sum(-1)
    return _to_rows(lp, starts, t), _to_rows(ent, starts, t)


def _prefill(model, prompts: list[list[int]], p_len: int, width: int, cache, device) -> tuple[Tensor, Tensor]:
    """Run the distinct prompts, left-padded to p_len, into `cache`.
    -> (logits at each prompt's last token [U, V], key mask [U, p_len + width])."""
    ids, key_mask, pos = left_pad(prompts, p_len, width, 0, device)  # pad id is never attended to
    return model(ids, positions=pos, key_mask=key_mask, cache=cache)[:, -1], key_mask


def _to_rows(x: Tensor, starts: Tensor, t: int) -> Tensor:
    """[N, width] values of completion positions -> [N, T] at absolute positions (0 before start)."""
    pos = torch.arange(t, device=x.device)[None] - starts[:, None]  # index into the completion block
    valid = (pos >= 0) & (pos < x.shape[1])
    return x.gather(1, pos.clamp(0, x.shape[1] - 1)) * valid


def rows_per_chunk(model, tokens: Tensor, budget: int = 1 << 27) -> int:
    """Rows of `tokens` whose [rows, T, V] float32 logits (and their log-softmax) stay within
    `budget` elements (2^27 = 512 MB): a 150k-vocab model scores a few long rows at a time."""
    vocab = int(getattr(getattr(model, "cfg", None), "vocab_size", 0) or 1 << 15)
    return max(1, budget // max(1, tokens.shape[1] * vocab))


@torch.no_grad()
def frozen_logprobs(model, tokens: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """No-grad log-probs [N, T] of the trained tokens (0 elsewhere), in memory-bounded chunks
    of rows (contiguous, so a group's rows mostly share a chunk and its prompt forward)."""
    step = rows_per_chunk(model, tokens)
    parts = [rollout_logprobs(model, tokens[i:i + step], mask[i:i + step], temperature)[0] * mask[i:i + step]
             for i in range(0, tokens.shape[0], step)]
    return torch.cat(parts) if parts else torch.zeros_like(mask)
