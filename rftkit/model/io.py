"""Saving and loading the built-in model: safetensors weights + JSON description.

A model folder holds `model.safetensors` and `model.json` ({"arch", "config", "tokenizer"}).
Nothing is ever unpickled. Writes are atomic: a temp folder is filled then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.tokenizer import CharTokenizer

ARCH = "rftkit-gpt"


def build_model(size: str, max_seq_len: int, tokenizer: CharTokenizer, vision: dict | None = None) -> GPT:
    """A fresh built-in model; `vision` (VisionConfig fields) makes it a VLM, and the tokenizer
    then lays out that many tokens per image."""
    if size not in SIZES:
        raise ValueError(f"unknown model size '{size}'; valid: {', '.join(SIZES)}")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, max_seq_len=max_seq_len, vision=vision, **SIZES[size]))
    tokenizer.image_tokens = model.vision.cfg.n_tokens if model.vision is not None else 0
    return model


def atomic_dir(final: Path) -> Path:
    """A fresh temp sibling of `final`; call `commit_dir(tmp, final)` when it is complete."""
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp`; a crash leaves either the old or the new folder, never half."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def write_model_files(model: GPT, tok: CharTokenizer, folder: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    meta = {"arch": ARCH, "config": model.cfg.to_dict(), "tokenizer": {"kind": "char", "alphabet": tok.alphabet}}
    (folder / "model.json").write_text(json.dumps(meta, indent=2))


def save_model(model: GPT, tok: CharTokenizer, folder: Path) -> None:
    if getattr(model, "is_hf", False):
        from rftkit.model.export import save_hf_model  # local: export imports this module

        return save_hf_model(model, tok, Path(folder))
    tmp = atomic_dir(folder)
    write_model_files(model, tok, tmp)
    commit_dir(tmp, folder)


def load_model(folder: Path, device: str = "cpu") -> tuple[GPT, CharTokenizer]:
    folder = Path(folder)
    from rftkit.model.export import is_hf_folder, load_hf_model  # local: export imports this module

    if is_hf_folder(folder):
        return load_hf_model(folder, device=device)
    meta_path = folder / "model.json"
    if not meta_path.is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"'{folder}' holds no model (expected model.json and model.safetensors)")
    meta = json.loads(meta_path.read_text())
    if meta.get("arch") != ARCH:
        raise ValueError(f"{meta_path}: arch {meta.get('arch')!r} is not {ARCH!r}")
    tok = CharTokenizer(meta["tokenizer"]["alphabet"])
    model = GPT(GPTConfig(**meta["config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    tok.image_tokens = model.vision.cfg.n_tokens if model.vision is not None else 0
    return model.to(device), tok


def copy_weights(src: GPT) -> GPT:
    """A frozen copy (the reference policy for KL)."""
    if getattr(src, "is_hf", False):
        import copy

        return copy.deepcopy(src).requires_grad_(False).eval()
    ref = GPT(src.cfg).to(next(src.parameters()).device)
    ref.load_state_dict(src.state_dict())
    ref.requires_grad_(False)
    return ref.eval()


__all__ = ["build_model", "save_model", "load_model", "copy_weights", "atomic_dir", "commit_dir"]
