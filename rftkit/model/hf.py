"""Hugging Face causal LMs behind the protocol of the built-in GPT, LoRA, and a `generate` engine.

`HFPolicy` wraps any local `AutoModelForCausalLM` so that the KV-cache engine, the trainer
and a critic use it exactly like `rftkit.model.gpt.GPT`:

    forward(ids [B, T], positions [B, T] | None, key_mask [B, S] bool | None, cache | None)
        -> logits [B, T, V]
    hidden(...) -> last (normalized) hidden states [B, T, D]
    new_cache(batch, max_len) -> HFCache (a transformers DynamicCache, `.length`, `select`)
    cfg.max_seq_len (max_position_embeddings), cfg.d_model (hidden_size)

positions become HF `position_ids`, key_mask becomes the 2-D `attention_mask` (cut to the
keys seen so far, as `generate` builds it), so left-padded decoding in our engine runs the
same computation as `model.generate` (tested token for token at temperature 0).

LoRA goes through PEFT: only adapter weights train, and `disabled_adapters(policy)` (or the
`BaseModelView` module) gives the base model's outputs for the reference policy without a
second copy in memory; `fold_adapters_into_base` moves that base to the current policy (the
ProRL reference reset with LoRA). `transformers`/`peft` are imported lazily: rftkit runs
without them. Vision-language models (Qwen2-VL class) load as `HFVisionPolicy`
(rftkit/model/hf_vision.py), the same interface with images in the token rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
LORA_DEFAULTS = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


def require(module: str):
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"rftkit's Hugging Face support needs '{module}': pip install 'rftkit[hf]' ({e})") from None


@dataclass(frozen=True)
class HFModelInfo:
    """The part of GPTConfig the engine, the trainer and a critic read."""

    max_seq_len: int
    d_model: int
    vocab_size: int
    n_layer: int
    model_type: str


class HFCache:
    """A transformers `DynamicCache` plus the number of positions it holds (`length`) and, for a
    vision-language model, each row's M-RoPE offset (`rope_deltas` [B, 1], hf_vision.py)."""

    def __init__(self, cache, max_len: int) -> None:
        self.cache = cache
        self.max_len = max_len
        self.length = 0
        self.rope_deltas: Tensor | None = None

    def select(self, rows: Tensor) -> None:
        """Keep only the given batch rows (repeats allowed: a shared prompt copied to its group)."""
        if self.rope_deltas is not None:
            self.rope_deltas = self.rope_deltas.index_select(0, rows.to(self.rope_deltas.device))
        layers = getattr(self.cache, "layers", None)
        if layers is None or any(type(x).__name__ != "DynamicLayer" for x in layers):
            self.cache.batch_select_indices(rows)
            return
        for layer in layers:  # index_select: its backward is an index_add, 3x faster than indexing's on CPU
            if getattr(layer, "keys", None) is not None and layer.keys.numel() > 0:
                layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


class HFPolicy(nn.Module):
    """An `AutoModelForCausalLM` (possibly a PEFT model) with the built-in GPT's interface.

    source: the folder it was loaded from (saved with run models; a LoRA run's models hold
    only the adapter and name this base). lora: the LoRA settings, or None (full fine-tuning).
    """

    is_hf = True
    autocast_dtype: torch.dtype | None = None
    base_modified: bool = False
    """LoRA: the base weights differ from `source` (ProRL resets folded adapters into them)."""

    def __init__(self, model: nn.Module, *, source: str | None = None, lora: dict | None = None) -> None:
        super().__init__()
        self.model = model
        self.source = source
        self.lora = lora
        c = _text_config(model.config)
        self.cfg = HFModelInfo(max_seq_len=int(getattr(c, "max_position_embeddings", None) or 1 << 20),
                               d_model=int(c.hidden_size), vocab_size=int(c.vocab_size),
                               n_layer=int(getattr(c, "num_hidden_layers", 0)), model_type=str(c.model_type))

    @property
    def hf_model(self) -> nn.Module:
        """The transformers model (LoRA layers injected in place when adapters are on)."""
        return self.model.get_base_model() if self.has_adapters else self.model

    @property
    def has_adapters(self) -> bool:
        return hasattr(self.model, "disable_adapter") and hasattr(self.model, "get_base_model")

    def new_cache(self, batch: int, max_len: int) -> HFCache:
        cache_cls = require("transformers").DynamicCache
        return HFCache(cache_cls(), min(max_len, self.cfg.max_seq_len))

    def forward(self, ids: Tensor, positions: Tensor | None = None, key_mask: Tensor | None = None,
                cache: HFCache | None = None) -> Tensor:
        """ids [B, T] -> logits [B, T, V]. Without positions/key_mask/cache: causal, pos 0..T-1."""
        return self._run(ids, positions, key_mask, cache, want_hidden=False)

    def hidden(self, ids: Tensor, positions: Tensor | None = None, key_mask: Tensor | None = None,
               cache: HFCache | None = None) -> Tensor:
        """ids [B, T] -> final normalized hidden states [B, T, D] (what the LM head reads)."""
        return self._run(ids, positions, key_mask, cache, want_hidden=True)

    def _run(self, ids, positions, key_mask, cache, want_hidden: bool) -> Tensor:
        start = cache.length if cache is not None else 0
        t = ids.shape[1]
        if start + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        kw = {"input_ids": ids, "position_ids": positions, "use_cache": cache is not None,
              "attention_mask": key_mask[:, : start + t].long() if key_mask is not None else None}
        if cache is not None:
            kw["past_key_values"] = cache.cache
        with autocast(self):
            if want_hidden:
                out = self.hf_model.get_decoder()(**kw).last_hidden_state
            else:
                out = self.model(**kw).logits
        if cache is not None:
            cache.length += t
        return out

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class BaseModelView(nn.Module):
    """The policy with its LoRA adapters disabled, as a module: the reference policy for KL.

    It holds no weights of its own (empty state_dict), so it costs no memory and a
    checkpoint of it is empty; every call runs the policy under `disabled_adapters`.
    """

    def __init__(self, policy: HFPolicy) -> None:
        super().__init__()
        if not policy.has_adapters:
            raise ValueError("BaseModelView needs a policy with LoRA adapters; without them the reference "
                             "policy is a frozen copy")
        object.__setattr__(self, "policy", policy)  # not a submodule: no parameters, no state
        self.cfg = policy.cfg

    def forward(self, *args, **kwargs) -> Tensor:
        with torch.no_grad(), disabled_adapters(self.policy):
            return self.policy(*args, **kwargs)

    def hidden(self, *args, **kwargs) -> Tensor:
        with torch.no_grad(), disabled_adapters(self.policy):
            return self.policy.hidden(*args, **kwargs)


@contextlib.contextmanager
def disabled_adapters(policy: HFPolicy):
    """Run the base model: inside, the policy's LoRA adapters are switched off."""
    if not policy.has_adapters:
        raise ValueError("disabled_adapters: the policy has no LoRA adapters (model.lora is not set)")
    with policy.model.disable_adapter():
        yield policy


def _lora_layers(policy: HFPolicy) -> list[tuple[str, nn.Module]]:
    lora_layer = require("peft.tuners.lora").LoraLayer
    return [(n, m) for n, m in policy.model.named_modules() if isinstance(m, lora_layer)]


def check_foldable(policy: HFPolicy) -> None:
    """Raise unless `fold_adapters_into_base` can make the base equal the policy: plain LoRA
    adapters only. DoRA rescales by a learned magnitude (B = 0 is not the identity there), and
    `modules_to_save` copies are trained but not part of the base the reference runs."""
    if not policy.has_adapters:
        raise ValueError("fold_adapters_into_base: the policy has no LoRA adapters")
    others = [n for n, p in policy.named_parameters() if p.requires_grad and "lora_" not in n]
    if others:
        raise ValueError(f"a reference reset with LoRA folds plain adapters only; these trained weights are not "
                         f"adapters (modules_to_save?): {others[:3]}")
    for name, layer in _lora_layers(policy):
        variants = [a for a in layer.active_adapters
                    if a in getattr(layer, "lora_variant", {}) or getattr(layer, "use_dora", {}).get(a)]
        if variants:
            raise ValueError(f"{name}: a reference reset with LoRA supports plain LoRA, not DoRA or other variants")


@torch.no_grad()
def fold_adapters_into_base(policy: HFPolicy) -> list[nn.Parameter]:
    """ProRL reference reset with LoRA: W <- W + scale * B @ A in every adapted layer, then B <- 0.

    Afterwards the policy computes the same function (up to the rounding of the sum, exact in
    float32 to ~1e-6) and the base with adapters disabled (the reference, `BaseModelView`)
    equals it. A is kept: with B = 0 it is a valid LoRA start (PEFT initializes A random, B
    zero), and keeping it draws no random numbers, so resumed runs stay exact. The base is now
    the policy's own (`base_modified`): checkpoints and saved models carry it from here on.
    Returns the adapter parameters, whose optimizer state the caller resets.
    """
    check_foldable(policy)
    for _, layer in _lora_layers(policy):
        base = layer.get_base_layer()
        for a in layer.active_adapters:
            if a in layer.lora_A:
                b_weight, b_bias = layer.lora_B[a].weight, layer.lora_B[a].bias
            elif a in layer.lora_embedding_B:
                b_weight, b_bias = layer.lora_embedding_B[a], None
            else:
                continue
            base.weight.add_(layer.get_delta_weight(a).to(base.weight.dtype))
            if b_bias is not None and getattr(layer, "lora_bias", {}).get(a):  # PEFT's lora_bias=True
                base.bias.add_((b_bias * layer.scaling[a]).to(base.bias.dtype))
            b_weight.zero_()
            if b_bias is not None:
                b_bias.zero_()
    policy.base_modified = True
    return policy.trainable_parameters()


def base_weight_tensors(policy: HFPolicy) -> dict[str, Tensor]:
    """The base weights of the adapted layers, by parameter name: what `fold_adapters_into_base`
    changes, so what a checkpoint or model folder must hold once `base_modified` is set."""
    return {k: p.detach().contiguous().cpu() for k, p in policy.named_parameters() if ".base_layer." in k}


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """Weight dtype. 'auto': bfloat16 on a GPU that supports it, else float32 (CPU bf16 is slow);
    'bf16-mixed': float32 weights (the forward runs under bf16 autocast, see HFPolicy)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "bf16-mixed":
        return torch.float32
    if dtype == "auto":
        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype '{dtype}' is not one of auto, bf16-mixed, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _dtype_kwarg(tf, dtype: torch.dtype) -> dict:
    major, minor = (int(x) for x in tf.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _check_local(path: str) -> None:
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"model.path '{path}' is not a Hugging Face model folder (no config.json)")
    elif path.startswith(("/", ".", "~")) or p.exists():
        raise FileNotFoundError(f"model.path '{path}' does not exist")


def load_hf_policy(path: str | Path, *, dtype: str = "auto", device: str = "auto", lora: dict | None = None,
                   gradient_checkpointing: bool = False, trust_remote_code: bool = False,
                   adapter: str | Path | None = None, train_vision: bool = False) -> HFPolicy:
    """Load a local causal LM folder (or, with network, a hub name) as an `HFPolicy`.

    dtype: "auto" (bfloat16 weights on a bf16 GPU, else float32), "float32", "bfloat16",
    "float16", or "bf16-mixed" (float32 weights, every forward under bf16 autocast, on CPU
    or GPU). device: "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...

    lora: PEFT LoraConfig fields (defaults r=16, alpha=32, dropout 0, all linear layers) to
    add fresh trainable adapters; adapter: a folder of saved adapters to load (trainable).
    With adapters only their weights require grad.

    A vision-language model folder (Qwen2-VL class: config with a vision part) loads as an
    `HFVisionPolicy` (hf_vision.py) with its image processor; its vision tower is frozen and
    gets no LoRA adapters unless train_vision.
    """
    tf = require("transformers")
    path = str(path)
    _check_local(path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    config = tf.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    vision = _vision_module(config)
    if train_vision and not vision:
        raise ValueError(f"train_vision is set, but '{path}' is a text-only model (no vision tower to train)")
    images = vision.load_image_processor(path, trust_remote_code) if vision else None  # fail before the weights
    kw = dict(trust_remote_code=trust_remote_code, **_dtype_kwarg(tf, torch_dtype))
    model = vision.load_vlm(tf, path, config, **kw) if vision else tf.AutoModelForCausalLM.from_pretrained(path, **kw)
    model.to(device)
    if vision and not train_vision:
        vision.vision_tower(model)[1].requires_grad_(False)
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if adapter is not None:
        peft = require("peft")
        model = peft.PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        lora = lora or {"loaded_from": str(adapter)}
    elif lora is not None:
        peft = require("peft")
        extra = vision.lora_exclusions(model, train_vision) if vision and "exclude_modules" not in lora else {}
        conf = peft.LoraConfig(task_type="CAUSAL_LM", **{**LORA_DEFAULTS, **extra, **lora})
        model = peft.get_peft_model(model, conf)
    model.train()
    source = str(Path(path).resolve()) if Path(path).is_dir() else path
    if vision:
        policy = vision.HFVisionPolicy(model, image_processor=images, source=source, lora=lora,
                                       train_vision=train_vision)
    else:
        policy = HFPolicy(model, source=source, lora=lora)
    policy.autocast_dtype = torch.bfloat16 if dtype == "bf16-mixed" else None
    return policy


def _vision_module(config):
    """rftkit.model.hf_vision for a vision-language model's config, else None (text models
    import nothing more)."""
    archs = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "vision_config", None) is None and "ForConditionalGeneration" not in archs:
        return None
    from rftkit.model import hf_vision

    return hf_vision if hf_vision.is_vlm_config(config) else None


def autocast(policy: HFPolicy):
    """The policy's autocast context ('bf16-mixed': bf16 on its device, CPU or GPU), else a no-op."""
    if getattr(policy, "autocast_dtype", None) is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(policy.parameters()).device.type, dtype=policy.autocast_dtype)


__all__ = ["BaseModelView", "HFCache", "HFPolicy", "autocast", "base_weight_tensors", "check_foldable",
           "disabled_adapters", "fold_adapters_into_base", "load_hf_policy", "resolve_device", "resolve_dtype"]
