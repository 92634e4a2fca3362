"""Scalar-head reward models: the policy's trunk plus a linear head read at the last token.

An outcome reward model (ORM) scores a whole completion: r(x, y) = w . h_L, h_L the final
hidden state at the completion's last trained token (its eos), as InstructGPT's RM
(Ouyang et al. 2022, arXiv:2203.02155) and `AutoModelForSequenceClassification` with one label
(the head has no bias, like transformers' `score` layer). A separate copy of the policy,
initialized from it when the stage starts, so training the RM never moves the policy.

A reward-model folder (`save_reward_model`, `load_reward_model`; safetensors + JSON, written
atomically) has model.json {"arch": "reward_model", "trunk": ...}:
    trunk "rftkit-gpt":  the built-in model's folder (model.safetensors, model.json's config
                         and tokenizer) plus head.safetensors {"weight": [1, d_model]}
    trunk "hf":          a folder `AutoModelForSequenceClassification.from_pretrained` loads
                         (config.json with num_labels 1 and pad_token_id, model.safetensors
                         with the trunk and `score.weight`, tokenizer files); LoRA is merged
transformers pools at the rightmost token != pad_token_id: the eos, what `score` reads, when
the folder's pad id differs from eos (the built-in tokenizer: pad 0, eos 2; HF: the
tokenizer's pad, else unk, else bos). Only a tokenizer whose sole candidate is eos gets pad ==
eos, and there transformers reads the token before the trailing eos (model.json "reads").
`rftkit export` writes the built-in RM as a `LlamaForSequenceClassification` (model/export.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rftkit.model.io import ARCH, atomic_dir, commit_dir, write_model_files

RM_ARCH = "reward_model"
HEAD_FILE = "head.safetensors"


def last_positions(mask: Tensor) -> Tensor:
    """[N]: the last position with mask > 0 of each row (the last column if none)."""
    t = mask.shape[1]
    idx = torch.arange(t, device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, idx, torch.full_like(idx, -1)).max(1).values
    return torch.where(last < 0, torch.full_like(last, t - 1), last)


class RewardScorer(nn.Module):
    """trunk (a copy of the policy) + head Linear(d_model, 1, bias=False), zero-initialized.

    copy_trunk=False uses `policy` itself as the trunk (a trunk just loaded from an RM folder).
    """

    def __init__(self, policy: nn.Module, *, copy_trunk: bool = True) -> None:
        super().__init__()
        device = next(policy.parameters()).device
        if not copy_trunk:
            self.trunk = policy
        elif getattr(policy, "is_hf", False):
            self.trunk = copy.deepcopy(policy)
        else:
            from rftkit.model.gpt import GPT

            self.trunk = GPT(policy.cfg).to(device)
            self.trunk.load_state_dict(policy.state_dict())
        self.head = nn.Linear(policy.cfg.d_model, 1, bias=False).to(device)
        nn.init.zeros_(self.head.weight)

    def score(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """tokens [N, T], mask [N, T] (1 on completion tokens) -> scores [N] (float32)."""
        hidden = self.trunk.hidden(tokens)
        last = last_positions(mask)
        picked = hidden[torch.arange(tokens.shape[0], device=tokens.device), last]
        return self.head(picked.to(self.head.weight.dtype)).squeeze(-1).float()

    def token_scores(self, tokens: Tensor) -> Tensor:
        """tokens [N, T] -> the head's logit at every position [N, T] (float32): a process
        reward model reads it at each step's last token (rftkit.algos.process)."""
        hidden = self.trunk.hidden(tokens)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()


def prompt_token_ids(tok, prompt) -> list[int]:
    """A prompt's ids as the trainer lays them out (`hf_tokenizer.problem_prompt_ids`):
    tok.prompt_ids(prompt) for an HF tokenizer (chat template), else [bos] + encode(prompt)."""
    return tok.prompt_ids(prompt) if hasattr(tok, "prompt_ids") else [tok.bos_id] + tok.encode(prompt)


@torch.no_grad()
def score_completions(scorer: RewardScorer, tok, prompts: list, completions: list[str],
                      batch_size: int = 32) -> list[float]:
    """scorer.score of prompt ids + encode(completion) + [eos], `batch_size` rows per forward,
    right-padded (the layout of `train/batches.py`). A row longer than the trunk's context
    keeps its last tokens, so the eos the head reads is always there."""
    device = next(scorer.parameters()).device
    limit = int(getattr(scorer.trunk.cfg, "max_seq_len", 1 << 30))
    out: list[float] = []
    for lo in range(0, len(prompts), batch_size):
        rows, lens = [], []
        for p, c in zip(prompts[lo: lo + batch_size], completions[lo: lo + batch_size], strict=True):
            prompt, completion = prompt_token_ids(tok, p), tok.encode(c) + [tok.eos_id]
            row = (prompt + completion)[-limit:]
            rows.append(row)
            lens.append(len(row))
        t = max(lens)
        tokens = torch.full((len(rows), t), tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), t))
        for i, (row, n) in enumerate(zip(rows, lens, strict=True)):
            tokens[i, :n] = torch.tensor(row)
            mask[i, n - 1] = 1.0  # the eos: the last trained token, where the head reads
        out += scorer.score(tokens.to(device), mask.to(device)).tolist()
    return out


# --- reward-model folders -----------------------------------------------------------------


def save_reward_model(scorer: RewardScorer, tok, folder: str | Path) -> Path:
    """Write `scorer` (and its tokenizer) as a reward-model folder, atomically; returns it.
    Format: the module docstring."""
    folder = Path(folder)
    tmp = atomic_dir(folder)
    if getattr(scorer.trunk, "is_hf", False):
        _write_hf(scorer, tok, tmp)
    else:
        write_model_files(scorer.trunk, tok, tmp)
        save_file({"weight": scorer.head.weight.detach().float().contiguous().cpu()}, str(tmp / HEAD_FILE))
        meta = json.loads((tmp / "model.json").read_text())
        meta = {"arch": RM_ARCH, "trunk": meta["arch"], "config": meta["config"], "tokenizer": meta["tokenizer"],
                "head": HEAD_FILE, "reads": "eos"}
        (tmp / "model.json").write_text(json.dumps(meta, indent=2))
    commit_dir(tmp, folder)
    return folder


def rm_pad(hf_tok) -> tuple[str, int]:
    """(token attribute, id) of the pad id an HF RM folder uses: one != eos if the tokenizer has
    one (pad, else unk, else bos: bos only ever opens a row), else eos (see the docstring)."""
    eos = hf_tok.eos_token_id
    for name in ("pad_token", "unk_token", "bos_token"):
        tid = getattr(hf_tok, f"{name}_id", None)
        if tid is not None and tid != eos:
            return name, int(tid)
    return "eos_token", int(eos)


def _write_hf(scorer: RewardScorer, tok, folder: Path) -> None:
    """An `AutoModelForSequenceClassification` folder: the trunk's decoder weights under its
    base-model prefix, the head as `score.weight` (in the trunk's dtype), num_labels 1."""
    from rftkit.model.hf import require

    tf = require("transformers")
    trunk = scorer.trunk
    src = copy.deepcopy(trunk.model).merge_and_unload() if trunk.has_adapters else trunk.hf_model
    decoder = src.base_model
    dtype = next(decoder.parameters()).dtype
    state = {f"{src.base_model_prefix}.{k}": v.detach().contiguous().cpu() for k, v in decoder.state_dict().items()}
    state["score.weight"] = scorer.head.weight.detach().to(dtype).contiguous().cpu()
    config = copy.deepcopy(src.config)
    arch = (getattr(config, "architectures", None) or [type(src).__name__])[0]
    name = arch[: arch.rfind("For")] + "ForSequenceClassification" if "For" in arch else arch
    if not hasattr(tf, name):
        raise ValueError(f"transformers has no {name} for this trunk ({arch}): it cannot be saved as a "
                         f"sequence classifier")
    pad_name, pad_id = rm_pad(tok.hf)
    config.architectures, config.num_labels, config.pad_token_id = [name], 1, pad_id
    config.dtype = dtype
    config.save_pretrained(str(folder))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf_tok = copy.deepcopy(tok.hf)
    if pad_name != "pad_token":
        hf_tok.pad_token = getattr(hf_tok, pad_name)
    hf_tok.save_pretrained(str(folder))
    meta = {"arch": RM_ARCH, "trunk": "hf", "class": name, "source": getattr(trunk, "source", None),
            "lora": "merged into the weights" if trunk.has_adapters else None,
            "system_prompt": tok.system_prompt, "chat_template": tok.use_template, "pad_token_id": pad_id,
            "reads": "eos" if pad_id != tok.eos_id else "the token before the trailing eos (pad == eos)"}
    (folder / "model.json").write_text(json.dumps(meta, indent=2))


def is_reward_model_folder(folder: str | Path) -> bool:
    meta = Path(folder) / "model.json"
    return meta.is_file() and json.loads(meta.read_text()).get("arch") == RM_ARCH


def load_reward_model(folder: str | Path, device: str = "cpu") -> tuple[RewardScorer, object]:
    """(scorer in eval mode, its tokenizer) from a folder written by `save_reward_model`."""
    folder = Path(folder)
    if not is_reward_model_folder(folder):
        raise ValueError(f"'{folder}' is not a reward-model folder (model.json arch {RM_ARCH!r})")
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("trunk") == "hf":
        from rftkit.model.hf import HFPolicy, _dtype_kwarg, require
        from rftkit.model.hf_tokenizer import load_hf_tokenizer

        tf = require("transformers")
        cls = tf.AutoModelForSequenceClassification.from_pretrained(str(folder), **_dtype_kwarg(tf, "auto"))
        scorer = RewardScorer(HFPolicy(cls.to(device), source=str(folder)), copy_trunk=False)
        head = cls.score.weight
        tok = load_hf_tokenizer(folder, system_prompt=meta.get("system_prompt"),
                                chat_template=meta.get("chat_template", "auto"))
    elif meta.get("trunk") == ARCH:
        from rftkit.model.gpt import GPT, GPTConfig
        from rftkit.model.tokenizer import CharTokenizer

        trunk = GPT(GPTConfig(**meta["config"]))
        trunk.load_state_dict(load_file(str(folder / "model.safetensors")))
        scorer = RewardScorer(trunk.to(device), copy_trunk=False)
        head = load_file(str(folder / meta.get("head", HEAD_FILE)))["weight"]
        tok = CharTokenizer(meta["tokenizer"]["alphabet"])
    else:
        raise ValueError(f"{folder / 'model.json'}: unknown reward-model trunk {meta.get('trunk')!r}")
    with torch.no_grad():
        scorer.head.weight.copy_(head.float())
    return scorer.eval(), tok


__all__ = ["HEAD_FILE", "RM_ARCH", "RewardScorer", "is_reward_model_folder", "last_positions", "load_reward_model",
           "prompt_token_ids", "rm_pad", "save_reward_model", "score_completions"]
