"""The step's process-supervision extras: where each rollout row's steps end, Math-Shepherd
labels for them (training a PRM), and a trained PRM's scores of them (RL with a PRM).

    step_positions(tok, tokens, trained, separator) -> step_mask [N, T], found [N]
    mc_labels(parts, m, step_mask, seed, rollouts, hard) -> step_labels [N, T], metrics
    process_data(parts, m, seed, metrics) -> ProcessData | None    what `step._prepare` calls
    load_prm(folder, device) -> LoadedPrm                          what `loop.train_stage` calls

Math-Shepherd (Wang et al. 2023, arXiv:2312.08935) "completion": from the prefix s_1..s_i of
a sampled solution the policy samples N completions; the soft label of step i is the
fraction whose final answer is correct, the hard label 1 if any is. The completions come
from the same machinery as the rollout rows (`rollout_rows.generate` with a `RowSpec` whose
`prefix` is the partial solution, as Prefix-RFT forces a demonstration prefix) and are
verified like them (`rollout_rows.score`). The last step's label is the row's own verdict.
"""

from __future__ import annotations

import inspect
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from rftkit.algos.layouts import RowSpec
from rftkit.algos.process import step_ends
from rftkit.errors import ConfigError
from rftkit.train.rollout_rows import generate, score

BUDGET_BUCKET = 8
"""Continuations are generated in calls grouped by their remaining token budget rounded down
to a multiple of this (a prefix plus its continuation stays within rollout.max_new_tokens,
so within the model's context), so a step makes a few engine calls, not one per position."""


@dataclass
class LoadedPrm:
    """A trained process reward model: the scorer, its step separator, its folder."""

    scorer: torch.nn.Module
    separator: str
    folder: Path


@dataclass
class ProcessData:
    step_mask: Tensor  # [N, T] 1 at each step's last token
    labels: Tensor | None  # [N, T] Math-Shepherd labels at step ends (needs "step_labels")
    scores: Tensor | None  # [N, T] the PRM's sigmoid score at step ends (needs "prm")


def step_positions(tok, tokens: Tensor, trained: Tensor, separator: str) -> tuple[Tensor, Tensor]:
    """step_mask [N, T] (1 at each step's last token, `algos.process.step_ends`) and found [N]
    bool (the separator occurs in the row). Tokens are decoded one at a time to map characters
    to tokens: exact for the built-in character tokenizer, close for BPE tokenizers."""
    out = torch.zeros(trained.shape, dtype=torch.float32, device=trained.device)
    found = torch.zeros(trained.shape[0], dtype=torch.bool)
    for i in range(trained.shape[0]):
        idx = trained[i].nonzero().squeeze(1).tolist()
        ends, found[i] = step_ends([tok.decode([int(tokens[i, t])]) for t in idx], separator)
        out[i, [idx[e] for e in ends]] = 1.0
    return out, found


def mc_labels(parts, m: dict, step_mask: Tensor, seed: int, rollouts: int, hard: bool) -> tuple[Tensor, dict]:
    """Math-Shepherd labels [N, T] at the step ends of `step_mask`: `rollouts` completions from
    every step prefix but the last (soft: fraction correct; hard: any correct); the last step
    gets the row's own correctness. Reproducible: engine seeds derive from `seed`."""
    tokens, trained = m["tokens"], torch.maximum(m["mask"], m["prefix"])
    labels = torch.zeros_like(step_mask)
    slots, buckets = [], defaultdict(list)  # (row, position, prefix text); budget -> slot indices
    budget = parts.sampling.max_new_tokens
    for i in range(tokens.shape[0]):
        ends = step_mask[i].nonzero().squeeze(1).tolist()
        if not ends:
            continue
        labels[i, ends[-1]] = float(m["verdicts"][i] is not None and m["verdicts"][i].correct)
        first = int(trained[i].nonzero()[0])
        for e in ends[:-1]:
            left = max(budget - (e + 1 - first), 1)
            buckets[left if left < BUDGET_BUCKET else left - left % BUDGET_BUCKET].append(len(slots))
            slots.append((i, e, parts.tok.decode(tokens[i, first:e + 1].tolist())))
    errors = 0.0
    for k, (left, chosen) in enumerate(sorted(buckets.items())):
        sub = SimpleNamespace(tok=parts.tok, generator=parts.generator, rewards=parts.rewards, model=parts.model,
                              sampling=replace(parts.sampling, max_new_tokens=left),
                              episode_limits=parts.episode_limits)
        specs = [(m["problems"][slots[s][0]], RowSpec(prefix=slots[s][2])) for s in chosen for _ in range(rollouts)]
        rows = generate(sub, specs, seed + 104_729 * (k + 1))
        errors += score(sub, rows).get("reward/errors", 0.0)
        ok = torch.tensor([r.verdict is not None and r.verdict.correct for r in rows], dtype=torch.float32)
        ok = ok.view(len(chosen), rollouts)
        for j, s in enumerate(chosen):
            labels[slots[s][0], slots[s][1]] = float(ok[j].max()) if hard else float(ok[j].mean())
    return labels, {"prm/label_rollouts": float(len(slots) * rollouts), "prm/label_errors": errors}


def label_knobs(parts) -> tuple[str, int, bool]:
    """(separator, rollouts, hard) of the stage's objective that needs "step_labels" (its knobs,
    else its defaults)."""
    bound = next(t.fn for t in parts.terms if "step_labels" in t.fn.needs)
    params = inspect.signature(bound.fn).parameters
    knobs = {k: bound.knobs.get(k, params[k].default) for k in ("separator", "rollouts", "label")}
    return knobs["separator"], int(knobs["rollouts"]), knobs["label"] == "hard"


def process_data(parts, m: dict, seed: int, metrics: dict) -> ProcessData | None:
    """Step ends, and labels / PRM scores by needs; None when no part needs them."""
    if not {"step_labels", "prm"} & parts.needs:
        return None
    if "step_labels" in parts.needs:
        sep, rollouts, hard = label_knobs(parts)
        where = f"the separator {sep!r} of objective 'prm' (its knob `separator`, objectives: [{{name: prm, " \
                f"params: {{separator: ...}}}}])"
    else:
        sep, where = parts.prm.separator, (f"the separator {parts.prm.separator!r} of the process reward model "
                                           f"{parts.prm.folder / 'model.json'} (its field 'separator')")
    trained = torch.maximum(m["mask"], m["prefix"])
    step_mask, found = step_positions(parts.tok, m["tokens"], trained, sep)
    if not bool(found.any()):
        raise ConfigError(
            f"{where} occurs in none of the {len(found)} completions of this step's batch (row 0: "
            f"{m['texts'][0][:80]!r}), so no completion has process steps. The separator must be what the "
            f"task's completions write between reasoning steps (the built-in scratchpad traces write ';'); "
            f"completions without it are scored as one step and counted in prm/no_separator_frac.")
    metrics["prm/no_separator_frac"] = float((~found).float().mean())
    metrics["prm/steps_mean"] = float(step_mask.sum() / max(1, step_mask.shape[0]))
    labels = scores = None
    if "step_labels" in parts.needs:
        labels, m_labels = mc_labels(parts, m, step_mask, seed + 5003, rollouts, hard)
        metrics.update(m_labels)
    if "prm" in parts.needs:
        scores = prm_step_scores(parts.prm, m["tokens"], step_mask)
    return ProcessData(step_mask, labels, scores)


@torch.no_grad()
def prm_step_scores(prm: LoadedPrm, tokens: Tensor, step_mask: Tensor) -> Tensor:
    """[N, T]: sigmoid of the PRM's logit at each step end, 0 elsewhere."""
    return torch.sigmoid(prm.scorer.token_scores(tokens)) * step_mask


def load_prm(folder: Path, device: str) -> LoadedPrm:
    """A PRM saved by a stage with the `prm` objective (model.json: "prm": true, "separator")."""
    from rftkit.model.reward_model import load_reward_model

    meta_path = Path(folder) / "model.json"
    if not meta_path.is_file():
        raise ConfigError(f"'{folder}' holds no reward model (no model.json); a stage with the 'prm' objective "
                          f"saves one to reward_models/<stage>")
    meta = json.loads(meta_path.read_text())
    if not meta.get("prm"):
        raise ConfigError(f"{meta_path}: not a process reward model (no \"prm\": true); train one with a stage "
                          f"whose objective is 'prm'")
    scorer, _ = load_reward_model(Path(folder), device)
    scorer.eval()
    for p in scorer.parameters():
        p.requires_grad_(False)
    return LoadedPrm(scorer, meta["separator"], Path(folder))


def mark_prm(folder: Path, separator: str) -> None:
    """Flag a saved reward-model folder as a PRM with its step separator (model.json "prm",
    "separator"), so a stage loading it splits completions as its training did."""
    path = Path(folder) / "model.json"
    meta = json.loads(path.read_text())
    meta.update(prm=True, separator=separator)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)


def stage_prm(run_dir: Path, stage, needed: bool, device: str) -> LoadedPrm | None:
    """The PRM a stage's `prm` key names (relative paths from the run dir), when a part needs it."""
    if not needed:
        return None
    if not stage.prm:
        raise ConfigError(f"stage '{stage.name}': a part needs a process reward model; set stages.{stage.name}.prm "
                          f"to its folder (e.g. reward_models/prm, written by a stage with the 'prm' objective)")
    path = Path(stage.prm).expanduser()
    return load_prm(path if path.is_absolute() else Path(run_dir) / path, device)


__all__ = ["LoadedPrm", "ProcessData", "label_knobs", "load_prm", "mark_prm", "mc_labels", "process_data",
           "prm_step_scores", "stage_prm", "step_positions"]
