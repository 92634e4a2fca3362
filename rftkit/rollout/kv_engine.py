"""Our batched KV-cache rollout engine (CPU or any torch device).

Prompts are left-padded so that every row decodes its next token at the same step; each
row's RoPE positions start at 0 on its first real token and padding keys are masked, so the
result equals running each prompt alone (tested against a no-cache sampler). One forward of
the whole prompt batch fills the cache, then one token per step; the loop stops as soon as
every row has emitted eos or a stop string. Output is re-laid out right-padded (`Generation`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rftkit.model.logprobs import left_pad
from rftkit.model.tokenizer import Tokenizer
from rftkit.rollout.base import GENERATORS, SamplingParams
from rftkit.rollout.sampling import sample_next
from rftkit.types import Generation


@GENERATORS.register("kv")
class KVCacheEngine:
    """max_batch: rows decoded together (bounds cache memory); larger prompt lists are chunked."""

    def __init__(self, model, tokenizer: Tokenizer, *, max_batch: int = 1024) -> None:
        self.model = model
        self.tok = tokenizer
        self.max_batch = max_batch

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Generation:
        rows = [p for p in prompts for _ in range(params.n)]
        device = next(self.model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()
        try:
            parts = [self._chunk(rows[i : i + self.max_batch], params, gen, device)
                     for i in range(0, len(rows), self.max_batch)]
        finally:
            self.model.train(was_training)
        return right_pad(parts, self.tok)

    def _chunk(self, rows: list[list[int]], params: SamplingParams, gen: torch.Generator, device):
        b, plen = len(rows), max(len(r) for r in rows)
        max_new = params.max_new_tokens
        limit = self.model.cfg.max_seq_len if hasattr(self.model, "cfg") else plen + max_new
        if plen + max_new > limit:
            raise ValueError(f"prompt of {plen} tokens + max_new_tokens {max_new} exceeds the "
                             f"model context of {limit}; lower rollout.max_new_tokens")
        logits, cache, key_mask, next_pos = self._prefill(rows, plen, max_new, device)
        out_tok = torch.full((b, max_new), self.tok.pad_id, dtype=torch.long, device=device)
        out_lp = torch.zeros((b, max_new), device=device)
        lengths = torch.full((b,), max_new, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)  # emitted eos or a stop string
        live = torch.arange(b, device=device)  # original row of each row still decoding
        n_steps = 0
        for t in range(max_new):
            tok, lp = sample_next(logits, params.temperature, params.top_k, params.top_p, gen)
            out_tok[live, t], out_lp[live, t] = tok, lp
            n_steps = t + 1
            finished = (tok == self.tok.eos_id) | self._hit_stop(out_tok[live, : t + 1], params.stop)
            lengths[live[finished]] = t + 1
            done[live[finished]] = True
            if bool(finished.all()) or t == max_new - 1:
                break
            key_mask[:, plen + t] = True
            if bool(finished.any()):
                # Finished rows leave the batch (cache rows too): later steps only pay for live rows.
                keep = (~finished).nonzero().squeeze(1)
                live, tok, key_mask, next_pos = live[keep], tok[keep], key_mask[keep], next_pos[keep]
                cache.select(keep)
            logits = self.model(tok[:, None], positions=next_pos + t, key_mask=key_mask, cache=cache)[:, -1]
        return rows, out_tok[:, :n_steps], out_lp[:, :n_steps], done, lengths.clamp(max=n_steps)

    def _prefill(self, rows: list[list[int]], plen: int, max_new: int, device):
        """One forward over the distinct prompts (a GRPO group shares one), then the cache and
        the last logits are copied out to every row. -> logits [B, V], cache, key_mask, next_pos."""
        index: dict[tuple[int, ...], int] = {}
        inverse = torch.tensor([index.setdefault(tuple(r), len(index)) for r in rows], device=device)
        u = len(index)
        ids, key_mask, pos = left_pad(list(index), plen, max_new, self.tok.pad_id, device)
        cache = self.model.new_cache(u, plen + max_new)
        logits = self.model(ids, positions=pos, key_mask=key_mask, cache=cache)[:, -1]
        if u < len(rows):
            cache.select(inverse)
            logits, key_mask, pos = logits[inverse], key_mask[inverse], pos[inverse]
        return logits, cache, key_mask, pos[:, -1:] + 1

    def _hit_stop(self, generated: Tensor, stop: tuple[str, ...]) -> Tensor:
        """Bool [B]: the decoded text of each row ends with one of the stop strings."""
        if not stop:
            return torch.zeros(generated.shape[0], dtype=torch.bool, device=generated.device)
        texts = [self.tok.decode(r) for r in generated.tolist()]
        hits = [any(tx.endswith(s) for s in stop) for tx in texts]
        return torch.tensor(hits, device=generated.device)


def right_pad(parts, tok: Tokenizer) -> Generation:
    """Concatenate chunks into the right-padded layout prompt + completion."""
    seqs, lps, masks, plens, trunc, texts = [], [], [], [], [], []
    for rows, toks, lp, done, lengths in parts:
        for r, tk, lq, d, n in zip(rows, toks.tolist(), lp.tolist(), done.tolist(), lengths.tolist()):
            seqs.append(r + tk[:n])
            lps.append([0.0] * len(r) + lq[:n])
            masks.append([0.0] * len(r) + [1.0] * n)
            plens.append(len(r))
            trunc.append(not d)
            texts.append(tok.decode([i for i in tk[:n] if i != tok.eos_id]))
    t = max(len(s) for s in seqs)
    # One tensor per field from padded Python lists: per-row torch.tensor calls cost more here.
    tokens = torch.tensor([s + [tok.pad_id] * (t - len(s)) for s in seqs], dtype=torch.long)
    logp = torch.tensor([x + [0.0] * (t - len(x)) for x in lps])
    mask = torch.tensor([m + [0.0] * (t - len(m)) for m in masks])
    return Generation(tokens=tokens, logp=logp, mask=mask, prompt_lens=torch.tensor(plens),
                      truncated=torch.tensor(trunc), texts=texts)
