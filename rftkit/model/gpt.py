"""The built-in tiny decoder-only transformer (GPT with RoPE, RMSNorm, tied embeddings).

Written for CPU research at small scale: causal attention goes through
`F.scaled_dot_product_attention`, the MLP is a standard GELU MLP, and a preallocated
`KVCache` lets the rollout engine decode one token per step. The interface
`forward(ids, positions, key_mask, cache) -> logits` is what the rollout engine and the
training step need from any causal LM, so a Hugging Face model can stand behind it.

Shapes: ids [B, T], positions [B, T] (absolute positions, for left-padded prompts),
key_mask [B, S] bool (False on padding keys, S = cache length after this call),
logits [B, T, V].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rftkit.model.vision import PatchEncoder, VisionConfig, embed_with_images


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    max_seq_len: int = 128
    rope_base: float = 10000.0
    vision: dict | None = None
    """A `VisionConfig`'s fields: the model is a VLM whose image tokens come from a patch encoder."""

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes. Parameter counts with the 60-symbol char vocabulary:
# nano ~0.45M, micro ~1.8M, mini ~14M.
SIZES: dict[str, dict[str, int]] = {
    "nano": {"n_layer": 4, "n_head": 4, "d_model": 96},
    "micro": {"n_layer": 4, "n_head": 6, "d_model": 192},
    "mini": {"n_layer": 8, "n_head": 8, "d_model": 384},
}


class KVCache:
    """Preallocated keys/values for every layer: [L, B, H, S_max, Dh]; `length` is filled."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, dtype: torch.dtype, device) -> None:
        hd = cfg.d_model // cfg.n_head
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, hd)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H, T, Dh] at the current length; return all keys/values so far."""
        t0, t1 = self.length, self.length + k.shape[2]
        self.k[layer, :, :, t0:t1] = k
        self.v[layer, :, :, t0:t1] = v
        return self.k[layer, :, :, :t1], self.v[layer, :, :, :t1]

    def select(self, rows: Tensor) -> None:
        """Keep only the given batch rows (drop finished sequences to save compute)."""
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)


def rope_tables(cfg: GPTConfig, device) -> tuple[Tensor, Tensor]:
    """cos, sin [max_seq_len, Dh/2] for rotary embeddings (Su et al. 2021, RoFormer)."""
    hd = cfg.d_model // cfg.n_head
    inv = 1.0 / (cfg.rope_base ** (torch.arange(0, hd, 2, device=device).float() / hd))
    freqs = torch.outer(torch.arange(cfg.max_seq_len, device=device).float(), inv)
    return freqs.cos(), freqs.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, Dh]; cos/sin broadcastable to [B, 1, T, Dh/2] (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.mlp_norm = nn.RMSNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False)
        self.fc_out = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: KVCache | None, layer: int) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.n_head, d // self.n_head).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [B, H, T, Dh]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        if mask is None:  # training layout: right padding, plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc(self.mlp_norm(x))))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model)
        # Text-only models hold no encoder and embed as they always did (no image check per call).
        self.vision = PatchEncoder(VisionConfig(**cfg.vision), cfg.d_model) if cfg.vision else None
        cos, sin = rope_tables(cfg, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for blk in self.blocks:  # scaled init of residual projections (GPT-2)
            for lin in (blk.proj, blk.fc_out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed.weight
        return KVCache(self.cfg, batch, min(max_len, self.cfg.max_seq_len), p.dtype, p.device)

    def forward(self, ids: Tensor, positions: Tensor | None = None,
                key_mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """ids [B, T] -> logits [B, T, V]. Without positions/key_mask/cache: causal, pos 0..T-1."""
        return F.linear(self.hidden(ids, positions, key_mask, cache), self.embed.weight)  # tied

    def hidden(self, ids: Tensor, positions: Tensor | None = None,
               key_mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """ids [B, T] -> final normalized hidden states [B, T, D] (a critic's value head reads these)."""
        b, t = ids.shape
        start = cache.length if cache is not None else 0
        if start + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        if positions is None:
            positions = torch.arange(start, start + t, device=ids.device).expand(b, t)
        cos = self.rope_cos[positions].unsqueeze(1)  # [B, 1, T, Dh/2]
        sin = self.rope_sin[positions].unsqueeze(1)
        mask = None
        if key_mask is not None or start > 0:
            mask = attention_mask(b, t, start, key_mask, ids.device)
        x = self.embed(ids) if self.vision is None else embed_with_images(self.embed, self.vision, ids)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, mask, cache, i)
        if cache is not None:
            cache.length += t
        return self.norm(x)


def attention_mask(b: int, t: int, start: int, key_mask: Tensor | None, device) -> Tensor:
    """Bool [B, 1, T, start+T]: causal over absolute positions, padding keys hidden.

    Each query may always see itself, so a padding query never has an empty row (which
    would give NaN); real queries never see padding keys because padding precedes them.
    """
    s = start + t
    q_idx = torch.arange(start, s, device=device).unsqueeze(1)
    k_idx = torch.arange(s, device=device).unsqueeze(0)
    causal = (k_idx <= q_idx).unsqueeze(0)  # [1, T, S]
    if key_mask is not None:
        causal = causal & key_mask[:, None, :s]
        causal = causal | (k_idx == q_idx).unsqueeze(0)
    return causal.unsqueeze(1).expand(b, 1, t, s)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
