"""Run model folders of HF policies, and export to a standard Hugging Face model folder.

Model folders of an HF-based run (`models/<stage>/`, checkpoints) hold `model.json` with
`{"arch": "hf", ...}` next to what transformers writes:
    full fine-tuning:  config.json, model.safetensors, tokenizer files
    LoRA:              adapter/ (PEFT adapter_config.json + weights), tokenizer files; the
                       base model is named by model.json "base" (not copied per stage)

`export_run(run_or_model_dir, out_dir)` writes a folder `AutoModelForCausalLM.from_pretrained`
loads: an HF run's weights (LoRA merged into the base) and tokenizer; the built-in GPT as a
`LlamaForCausalLM` that computes the same function (see `gpt_to_llama`), with its character
tokenizer as a `tokenizers` WordLevel tokenizer. A reward-model folder (model/reward_model.py)
exports as a folder `AutoModelForSequenceClassification.from_pretrained` loads: the built-in
RM as a `LlamaForSequenceClassification` (the same Llama trunk + `score.weight`, see
`gpt_rm_to_llama`), an HF RM as it is (its folder already is one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from rftkit.errors import CheckpointError
from rftkit.model.gpt import GPT
from rftkit.model.hf import HFPolicy, base_weight_tensors, load_hf_policy, require
from rftkit.model.hf_tokenizer import HFTokenizer
from rftkit.model.io import ARCH, atomic_dir, commit_dir, load_model
from rftkit.model.reward_model import RM_ARCH, RewardScorer, load_reward_model
from rftkit.model.tokenizer import SPECIALS, CharTokenizer

HF_ARCH = "hf"
HF_CKPT_ARCH = "hf-checkpoint"
BASE_WEIGHTS = "base_weights.safetensors"


def write_hf_files(policy: HFPolicy, tok: HFTokenizer, folder: Path) -> None:
    """Fill `folder` (which exists) with the policy, its tokenizer and model.json."""
    meta = {"arch": HF_ARCH, "lora": policy.lora, "base": policy.source,
            "system_prompt": tok.system_prompt, "chat_template": tok.use_template}
    if getattr(policy, "train_vision", False):  # a VLM's trained vision tower: trainable again when loaded
        meta["train_vision"] = True
    if policy.has_adapters:
        policy.model.save_pretrained(str(folder / "adapter"))
        if policy.base_modified:  # ProRL resets folded adapters into the base: `base` alone is stale
            from safetensors.torch import save_file

            save_file(base_weight_tensors(policy), str(folder / BASE_WEIGHTS))
            meta["base_weights"] = BASE_WEIGHTS
    else:
        policy.model.save_pretrained(str(folder))
        meta["base"] = None
    _save_processor(tok, folder)
    tok.hf.save_pretrained(str(folder))  # after the processor, which may write its own tokenizer's copy
    (folder / "model.json").write_text(json.dumps(meta, indent=2))


def _save_processor(tok: HFTokenizer, folder: Path) -> None:
    """A VLM's processor files (image processor, chat template) with its model, so that the
    folder loads back as a VLM (`load_hf_tokenizer` finds them)."""
    if getattr(tok, "processor", None) is not None:
        tok.processor.save_pretrained(str(folder))


def save_hf_model(policy: HFPolicy, tok: HFTokenizer, folder: Path) -> None:
    """Atomic save (the folder is replaced only once complete), like `io.save_model`."""
    folder = Path(folder)
    tmp = atomic_dir(folder)
    write_hf_files(policy, tok, tmp)
    commit_dir(tmp, folder)


def is_hf_folder(folder: Path) -> bool:
    """A model folder or a training checkpoint of an HF policy (not the built-in GPT's)."""
    meta = Path(folder) / "model.json"
    return meta.is_file() and json.loads(meta.read_text()).get("arch") in (HF_ARCH, HF_CKPT_ARCH)


def write_hf_checkpoint(policy: HFPolicy, folder: Path, init_dir: Path) -> None:
    """A training checkpoint's model: the trainable weights, on top of the run's models/init."""
    from safetensors.torch import save_file

    save_file(checkpoint_tensors(policy), str(Path(folder) / "model.safetensors"))
    meta = {"arch": HF_CKPT_ARCH, "init": os.path.relpath(init_dir, folder)}
    (Path(folder) / "model.json").write_text(json.dumps(meta, indent=2))


def load_hf_model(folder: Path, *, device: str = "auto", dtype: str = "auto",
                  gradient_checkpointing: bool = False) -> tuple[HFPolicy, HFTokenizer]:
    """Load a folder written by `save_hf_model` (adapters trainable, if any)."""
    from rftkit.model.hf_tokenizer import load_hf_tokenizer

    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text())
    kw = dict(dtype=dtype, device=device, gradient_checkpointing=gradient_checkpointing)
    vision = {"train_vision": True} if meta.get("train_vision") else {}
    if meta.get("arch") == HF_CKPT_ARCH:  # a training checkpoint: models/init + its trainable weights
        from safetensors.torch import load_file

        policy, tok = load_hf_model(folder / meta["init"], **kw)
        load_checkpoint_tensors(policy, load_file(str(folder / "model.safetensors")))
        return policy, tok
    if meta.get("base"):
        policy = load_hf_policy(meta["base"], adapter=folder / "adapter", **kw, **vision)
        policy.lora = meta.get("lora")
        if meta.get("base_weights"):
            from safetensors.torch import load_file

            _load_base_weights(policy, load_file(str(folder / meta["base_weights"])))
    else:
        policy = load_hf_policy(folder, **kw, **vision)
    tok = load_hf_tokenizer(folder, system_prompt=meta.get("system_prompt"),
                            chat_template=meta.get("chat_template", "auto"))
    return policy, tok


def checkpoint_tensors(policy: HFPolicy) -> dict[str, torch.Tensor]:
    """The trainable weights (all of them, or only the LoRA adapters), for a training checkpoint,
    plus the adapted layers' base weights once a ProRL reset has folded adapters into them.

    `named_parameters` lists a tied weight once, so safetensors never sees shared storage.
    """
    out = {k: p.detach().contiguous().cpu() for k, p in policy.named_parameters() if p.requires_grad}
    if policy.has_adapters and policy.base_modified:
        out.update(base_weight_tensors(policy))
    return out


def load_checkpoint_tensors(policy: HFPolicy, tensors: dict[str, torch.Tensor]) -> None:
    missing = [k for k, p in policy.named_parameters() if p.requires_grad and k not in tensors]
    unknown = sorted(set(tensors) - {k for k, _ in policy.named_parameters()})
    if missing or unknown:
        raise CheckpointError(f"checkpoint does not match the policy: missing {missing[:5]}, "
                              f"unexpected {unknown[:5]}")
    policy.load_state_dict(tensors, strict=False)
    if policy.has_adapters and any(".base_layer." in k for k in tensors):
        policy.base_modified = True


def _load_base_weights(policy: HFPolicy, tensors: dict[str, torch.Tensor]) -> None:
    """Base weights saved after ProRL resets (`write_hf_files`), on top of the original base."""
    params = dict(policy.named_parameters())
    unknown = sorted(k for k in tensors if k not in params or ".base_layer." not in k)
    if unknown:
        raise CheckpointError(f"{BASE_WEIGHTS} does not match the policy: unexpected {unknown[:5]}")
    policy.load_state_dict(tensors, strict=False)
    policy.base_modified = True


# --- the built-in GPT as a Llama ------------------------------------------------------------


def llama_config_for(model: GPT):
    """LlamaConfig computing the built-in GPT's function.

    The built-in MLP is a plain GELU MLP, fc_out(gelu(fc(x))); Llama's is gated,
    down(act(gate(x)) * up(x)). With hidden_act="gelu" (exact erf GELU, as F.gelu) and
    mlp_bias=True, setting up_proj to weight 0, bias 1 makes up(x) == 1 exactly, so the
    gated MLP equals the plain one (at the price of one unused matmul). RMSNorm eps is
    float32 machine epsilon, what nn.RMSNorm(eps=None) uses for float32 inputs.
    """
    tf = require("transformers")
    c = model.cfg
    kw = dict(vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=4 * c.d_model,
              num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_head,
              head_dim=c.d_model // c.n_head, hidden_act="gelu", max_position_embeddings=c.max_seq_len,
              rms_norm_eps=torch.finfo(torch.float32).eps, tie_word_embeddings=True, attention_bias=False,
              mlp_bias=True, pad_token_id=CharTokenizer.pad_id, bos_token_id=CharTokenizer.bos_id,
              eos_token_id=CharTokenizer.eos_id)
    import inspect

    if "rope_parameters" in inspect.signature(tf.LlamaConfig.__init__).parameters:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": c.rope_base}
    else:
        kw["rope_theta"] = c.rope_base
    return tf.LlamaConfig(**kw)


def gpt_to_llama(model: GPT):
    """A float32 `LlamaForCausalLM` with the built-in model's weights (same logits, ~1e-5)."""
    tf = require("transformers")
    hf = tf.LlamaForCausalLM(llama_config_for(model)).float()
    d = model.cfg.d_model
    src = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out = {"model.embed_tokens.weight": src["embed.weight"], "model.norm.weight": src["norm.weight"]}
    for i in range(model.cfg.n_layer):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = src[b + "qkv.weight"].split(d, dim=0)
        fc = src[b + "fc.weight"]
        out.update({
            h + "input_layernorm.weight": src[b + "attn_norm.weight"],
            h + "post_attention_layernorm.weight": src[b + "mlp_norm.weight"],
            h + "self_attn.q_proj.weight": q, h + "self_attn.k_proj.weight": k, h + "self_attn.v_proj.weight": v,
            h + "self_attn.o_proj.weight": src[b + "proj.weight"],
            h + "mlp.gate_proj.weight": fc, h + "mlp.gate_proj.bias": torch.zeros(fc.shape[0]),
            h + "mlp.up_proj.weight": torch.zeros_like(fc), h + "mlp.up_proj.bias": torch.ones(fc.shape[0]),
            h + "mlp.down_proj.weight": src[b + "fc_out.weight"], h + "mlp.down_proj.bias": torch.zeros(d),
        })
    missing, unexpected = hf.load_state_dict(out, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"gpt_to_llama: unmapped weights: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.eval()


def gpt_rm_to_llama(scorer: RewardScorer):
    """A float32 `LlamaForSequenceClassification` (num_labels 1, pad 0) with a built-in RM's
    trunk (as `gpt_to_llama`) and head as `score.weight`: the same scores on the same ids
    (transformers pools at the rightmost non-pad token, the eos the scorer reads)."""
    tf = require("transformers")
    config = llama_config_for(scorer.trunk)
    config.num_labels = 1
    hf = tf.LlamaForSequenceClassification(config).float()
    hf.model.load_state_dict(gpt_to_llama(scorer.trunk).model.state_dict())
    with torch.no_grad():
        hf.score.weight.copy_(scorer.head.weight.detach().float().cpu())
    return hf.eval()


def char_tokenizer_to_hf(tok: CharTokenizer):
    """The character tokenizer as a PreTrainedTokenizerFast with the same ids (one per char).

    `tokenizer(text)` prepends <bos> (as rftkit prompts have it); unknown characters map to
    <unk>. Unlike CharTokenizer, the literal texts "<pad>", "<bos>", "<eos>", "<unk>" read as
    the special tokens.
    """
    tokenizers = require("tokenizers")
    tf = require("transformers")
    vocab = {s: i for i, s in enumerate(SPECIALS)} | {ch: i + len(SPECIALS) for i, ch in enumerate(tok.alphabet)}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = tokenizers.decoders.Fuse()
    core.post_processor = tokenizers.processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.bos_id)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                      pad_token="<pad>", unk_token="<unk>")


# --- export ---------------------------------------------------------------------------------


def model_folder(path: Path, stage: str | None = None) -> Path:
    """A model folder: the path itself, or a run dir's models/<stage> (default: its last stage)."""
    path = Path(path)
    if stage is None and (path / "model.json").is_file():
        return path
    models = path / "models"
    if not models.is_dir():
        raise CheckpointError(f"'{path}' is neither a model folder (model.json) nor a run dir (models/)")
    if stage is None:
        stage = _last_stage(path, models)
    folder = models / stage
    if not (folder / "model.json").is_file():
        have = sorted(p.name for p in models.iterdir() if (p / "model.json").is_file())
        raise CheckpointError(f"'{folder}' holds no model; this run has: {', '.join(have) or '(none)'}")
    return folder


def _last_stage(run: Path, models: Path) -> str:
    cfg = run / "config.yaml"
    if cfg.is_file():
        import yaml

        names = [s.get("name") for s in (yaml.safe_load(cfg.read_text()) or {}).get("stages", [])]
        done = [n for n in names if n and (models / n / "model.json").is_file()]
        if done:
            return done[-1]
    saved = [p for p in models.iterdir() if (p / "model.json").is_file()]
    if not saved:
        raise CheckpointError(f"'{models}' holds no saved model")
    return max(saved, key=lambda p: (p / "model.json").stat().st_mtime).name


def export_run(run_or_model_dir: str | Path, out_dir: str | Path, *, stage: str | None = None) -> Path:
    """Write a standard HF model folder to out_dir; returns it. See the module docstring."""
    folder = model_folder(Path(run_or_model_dir), stage)
    out = Path(out_dir)
    tmp = atomic_dir(out)
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("arch") in (HF_ARCH, HF_CKPT_ARCH):
        policy, tok = load_hf_model(folder, device="cpu", dtype="float32")
        dtype = _source_dtype(policy.source)  # the base's (LoRA) or the saved model's dtype
        hf = policy.model.merge_and_unload() if policy.has_adapters else policy.model
        hf.to(dtype).save_pretrained(str(tmp))
        _save_processor(tok, tmp)
        tok.hf.save_pretrained(str(tmp))
        kind = "merged LoRA" if policy.has_adapters else "full fine-tuning"
    elif meta.get("arch") == RM_ARCH:
        kind = _export_reward_model(folder, meta, tmp)
    elif meta.get("arch") == ARCH:
        model, char_tok = load_model(folder, "cpu")
        gpt_to_llama(model).save_pretrained(str(tmp))
        char_tokenizer_to_hf(char_tok).save_pretrained(str(tmp))
        kind = "built-in GPT as LlamaForCausalLM (gelu, mlp_bias, up_proj = 1)"
    else:
        raise CheckpointError(f"{folder / 'model.json'}: unknown arch {meta.get('arch')!r}")
    (tmp / "rftkit_export.json").write_text(json.dumps({"source": str(folder.resolve()), "kind": kind}, indent=2))
    commit_dir(tmp, out)
    return out


def _export_reward_model(folder: Path, meta: dict, tmp: Path) -> str:
    if meta.get("trunk") == "hf":  # already an AutoModelForSequenceClassification folder
        import shutil

        for f in folder.iterdir():
            if f.is_file() and f.name != "model.json":
                shutil.copy2(f, tmp / f.name)
        return "reward model (AutoModelForSequenceClassification, as saved)"
    scorer, char_tok = load_reward_model(folder, "cpu")
    gpt_rm_to_llama(scorer).save_pretrained(str(tmp))
    char_tokenizer_to_hf(char_tok).save_pretrained(str(tmp))
    return "built-in reward model as LlamaForSequenceClassification (gelu, mlp_bias, up_proj = 1)"


def _source_dtype(source) -> torch.dtype:
    """The dtype the source checkpoint was stored in (config.json), float32 if unknown."""
    cfg = Path(str(source)) / "config.json"
    if cfg.is_file():
        raw = json.loads(cfg.read_text())
        name = raw.get("dtype") or raw.get("torch_dtype")
        if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
    return torch.float32


__all__ = ["save_hf_model", "load_hf_model", "is_hf_folder", "write_hf_checkpoint", "export_run", "gpt_to_llama",
           "gpt_rm_to_llama", "char_tokenizer_to_hf",
           "checkpoint_tensors", "load_checkpoint_tensors", "model_folder"]
