"""Training checkpoints: everything needed to continue a run exactly, and nothing pickled.

    run_dir/checkpoints/step_000120/
        model.safetensors, model.json     the policy (same format as a models/ folder)
        optim.safetensors                 AdamW moments and step counts
        state.json                        stage, steps, sampler state, counters, optimizer groups,
                                          python RNG, metrics line count
    run_dir/checkpoints/latest            name of the newest complete checkpoint

A checkpoint folder is filled under a temp name and renamed when complete, then `latest`
is replaced atomically; a crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from rftkit.errors import CheckpointError
from rftkit.model.io import atomic_dir, commit_dir, write_model_files
from rftkit.rollout.weights import bump


def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{idx}/{k}"] = v.detach().contiguous().cpu() if torch.is_tensor(v) else torch.tensor(v)
    return tensors, sd["param_groups"]


def _optim_from(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": groups}


def save_checkpoint(run_dir: Path, step: int, model, tok, optimizer, state: dict, keep: int,
                    extra: dict | None = None) -> Path:
    """`extra`: name -> module saved as <name>.safetensors (critic, reference policy)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = atomic_dir(final)
    if getattr(model, "is_hf", False):  # trainable weights only, on top of models/init
        from rftkit.model.export import write_hf_checkpoint

        write_hf_checkpoint(model, tmp, Path(run_dir) / "models" / "init")
    else:
        write_model_files(model, tok, tmp)
    tensors, groups = _optim_tensors(optimizer)
    tensors["rng/torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optim.safetensors"))
    for name, module in (extra or {}).items():
        if not module.state_dict():  # a weight-less view (LoRA reference): nothing to save
            continue
        # save_model drops the duplicate names of tied weights (an HF copy's embeddings and
        # lm_head), which save_file refuses; load_model accepts them missing.
        save_model(module, str(tmp / f"{name}.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optim_groups": groups}, indent=1))
    commit_dir(tmp, final)
    latest_tmp = root / "latest.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / "latest")
    ckpts = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith((".tmp", ".old")))
    for old in ckpts[: max(0, len(ckpts) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"'{run_dir}' holds no checkpoint to resume from (expected {pointer}); "
                              f"start a new run instead of --resume")
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"checkpoint '{path}' named by {pointer} is missing or incomplete")
    return path


def load_checkpoint(path: Path, model, optimizer=None, extra: dict | None = None) -> dict:
    """Load weights (optimizer state and extra modules, if given) from `path`; return state.json."""
    state = json.loads((path / "state.json").read_text())
    if getattr(model, "is_hf", False):
        from rftkit.model.export import load_checkpoint_tensors

        load_checkpoint_tensors(model, load_file(str(path / "model.safetensors")))
    else:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    bump(model)
    tensors = load_file(str(path / "optim.safetensors"))
    torch.set_rng_state(tensors.pop("rng/torch"))
    if optimizer is not None:
        optimizer.load_state_dict(_optim_from(tensors, state["optim_groups"]))
    for name, module in (extra or {}).items():
        if not module.state_dict():
            continue
        f = path / f"{name}.safetensors"
        if not f.is_file():
            raise CheckpointError(f"checkpoint '{path}' has no {f.name}, but this stage needs a {name}")
        load_model(module, str(f))
    return state
