"""Preference objectives on (chosen, rejected) pairs, and reward-model objectives.

    ObjectiveFn(inp: LossInputs, *, knobs) -> (scalar loss, metrics dict of floats)

They read the pair part of LossInputs: pair_logp [P, 2, T] (current policy, with grad),
pair_mask [P, 2, T], pair_ref_logp [P, 2, T] (frozen reference, needs "ref_pairs"),
pair_rewards [P, 2] (the scores that ranked each pair), pair_scores [P, 2] (a reward model's
scalar scores, with grad, needs "scores"). Index 0 is the chosen completion y_w, 1 the rejected
y_l. Notation: log pi(y|x) = sum_t pair_logp * pair_mask (the sequence log-prob);
h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)] (the implicit reward
margin). Every loss is a mean over pairs; the count is the whole optimizer step's
(`inp.whole`), so micro-batches add up to it. Registered on import of `rftkit.algos.objectives`;
formulas, sources and knobs are tabled in docs/preference.md.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rftkit.algos.hybrid_sft import need as _need
from rftkit.algos.objectives import LossInputs, objective


def seq_logp(logp: Tensor, mask: Tensor, average: bool = False) -> Tensor:
    """[P, 2, T] per-token log-probs -> [P, 2] sequence log-probs (sum, or mean over tokens)."""
    total = (logp * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0) if average else total


def pair_mean(values: Tensor, inp: LossInputs) -> Tensor:
    """Sum of per-pair values [p] / the whole step's pair count (the mean when unsplit)."""
    whole = inp.whole.pair_mask if inp.whole is not None and inp.whole.pair_mask is not None else inp.pair_mask
    return values.sum() / max(int(whole.shape[0]), 1)


def implicit_margin(inp: LossInputs, average: bool = False) -> Tensor:
    """h [P]: the chosen minus the rejected log-ratio log pi / pi_ref (DPO's implicit reward
    difference, up to beta)."""
    ratio = seq_logp(inp.pair_logp, inp.pair_mask, average) - seq_logp(inp.pair_ref_logp, inp.pair_mask, average)
    return ratio[:, 0] - ratio[:, 1]


def _pair_metrics(prefix: str, loss: Tensor, margin: Tensor, chosen: Tensor, rejected: Tensor) -> dict[str, float]:
    with torch.no_grad():
        return {f"loss/{prefix}": float(loss.detach()),
                "pref/accuracy": float((margin > 0).float().mean()) if margin.numel() else 0.0,
                "pref/margin": float(margin.mean()) if margin.numel() else 0.0,
                "pref/chosen_reward": float(chosen.mean()) if chosen.numel() else 0.0,
                "pref/rejected_reward": float(rejected.mean()) if rejected.numel() else 0.0}


@objective("dpo", needs={"pairs", "ref_pairs"})
def dpo_objective(inp: LossInputs, *, beta: float = 0.1, label_smoothing: float = 0.0) -> tuple[Tensor, dict]:
    """DPO: -log sigmoid(beta h) (Rafailov et al. 2023, arXiv:2305.18290, eq. 7).

    label_smoothing eps > 0 is conservative DPO (cDPO, Mitchell 2023, "A note on DPO with noisy
    preferences"): -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), for labels flipped
    with probability eps; the form of TRL's `dpo_loss` (loss_type "sigmoid") up to v0.12 and of
    the SimPO code (TRL 1.x moved label smoothing to its "robust" loss). Metrics
    pref/chosen_reward and pref/rejected_reward are beta log pi / pi_ref of each side (TRL's
    rewards/chosen, rewards/rejected).
    """
    _need(inp, ("pair_logp", "pair_ref_logp", "pair_mask"), "dpo")
    if beta <= 0 or not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo: beta must be > 0 and label_smoothing in [0, 0.5), got {beta}, {label_smoothing}")
    h = implicit_margin(inp)
    per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    loss = pair_mean(per_pair, inp)
    ratio = beta * (seq_logp(inp.pair_logp, inp.pair_mask) - seq_logp(inp.pair_ref_logp, inp.pair_mask)).detach()
    return loss, _pair_metrics("dpo", loss, h.detach(), ratio[:, 0], ratio[:, 1])


@objective("ipo", needs={"pairs", "ref_pairs"})
def ipo_objective(inp: LossInputs, *, beta: float = 0.1) -> tuple[Tensor, dict]:
    """IPO: (h - 1 / (2 beta))^2 (Azar et al. 2023, arXiv:2310.12036, eq. 17; beta is the
    paper's tau). As TRL `loss_type="ipo"`, h is built from log-probs averaged over each
    completion's tokens, so the target margin does not grow with length."""
    _need(inp, ("pair_logp", "pair_ref_logp", "pair_mask"), "ipo")
    if beta <= 0:
        raise ValueError(f"ipo: beta must be > 0, got {beta}")
    h = implicit_margin(inp, average=True)
    loss = pair_mean((h - 1.0 / (2.0 * beta)) ** 2, inp)
    ratio = (seq_logp(inp.pair_logp, inp.pair_mask, True) - seq_logp(inp.pair_ref_logp, inp.pair_mask, True)).detach()
    return loss, _pair_metrics("ipo", loss, h.detach(), beta * ratio[:, 0], beta * ratio[:, 1])


@objective("simpo", needs={"pairs"})
def simpo_objective(inp: LossInputs, *, beta: float = 2.0, gamma: float = 0.5) -> tuple[Tensor, dict]:
    """SimPO, reference-free and length-normalized (Meng et al. 2024, arXiv:2405.14734, eq. 6):
    -log sigmoid(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma). gamma is the target
    reward margin, absolute as in the paper's eq. 6 and TRL's CPOTrainer (the official code takes gamma / beta;
    its defaults beta 2.0, gamma / beta 0.25 give the defaults here)."""
    _need(inp, ("pair_logp", "pair_mask"), "simpo")
    if beta <= 0 or gamma < 0:
        raise ValueError(f"simpo: beta must be > 0 and gamma >= 0, got {beta}, {gamma}")
    avg = beta * seq_logp(inp.pair_logp, inp.pair_mask, average=True)
    margin = avg[:, 0] - avg[:, 1]
    loss = pair_mean(-F.logsigmoid(margin - gamma), inp)
    return loss, _pair_metrics("simpo", loss, margin.detach(), avg[:, 0].detach(), avg[:, 1].detach())


@objective("bradley_terry", needs={"pairs", "scores"})
def bradley_terry_objective(inp: LossInputs, *, margin: float = 0.0, center: float = 0.0) -> tuple[Tensor, dict]:
    """Reward-model loss on pairs: -log sigmoid(r(y_w) - r(y_l) - margin) (Bradley & Terry 1952;
    Ouyang et al. 2022, arXiv:2203.02155, eq. 1; TRL `RewardTrainer`). center > 0 adds
    center * (r(y_w) + r(y_l))^2, TRL's `center_rewards_coefficient` (Eisenstein et al. 2023),
    which keeps the scores near zero. Reads pair_scores [P, 2] (the scorer, with grad)."""
    _need(inp, ("pair_scores", "pair_mask"), "bradley_terry")
    s = inp.pair_scores
    diff = s[:, 0] - s[:, 1]
    per_pair = -F.logsigmoid(diff - margin)
    if center:
        per_pair = per_pair + center * s.sum(-1) ** 2
    loss = pair_mean(per_pair, inp)
    m = _pair_metrics("rm", loss, diff.detach(), s[:, 0].detach(), s[:, 1].detach())
    return loss, {"loss/rm": m["loss/rm"], "rm/accuracy": m["pref/accuracy"], "rm/margin": m["pref/margin"],
                  "rm/chosen_score": m["pref/chosen_reward"], "rm/rejected_score": m["pref/rejected_reward"]}


@objective("rm_pointwise", needs={"rollout", "scores"})
def rm_pointwise_objective(inp: LossInputs, *, loss: Literal["bce", "mse"] = "bce") -> tuple[Tensor, dict]:
    """Reward-model loss on single labelled completions (an outcome reward model, ORM, trained
    on verifier labels, Cobbe et al. 2021, arXiv:2110.14168): "bce" = binary cross-entropy of
    sigmoid(r(y)) against the row's reward in [0, 1], "mse" = (r(y) - reward)^2. Reads
    scores [N] (the scorer on the rollout rows, with grad) and rewards [N]; mean over the whole
    step's rows."""
    _need(inp, ("scores", "rewards"), "rm_pointwise")
    target = inp.rewards.float()
    if loss == "bce":
        if bool(((target < 0) | (target > 1)).any()):
            raise ValueError("rm_pointwise: bce needs rewards in [0, 1]; use loss: mse for other rewards")
        per_row = F.binary_cross_entropy_with_logits(inp.scores, target, reduction="none")
    else:
        per_row = (inp.scores - target) ** 2
    rows = inp.whole.rewards.shape[0] if inp.whole is not None and inp.whole.rewards is not None else len(target)
    value = per_row.sum() / max(rows, 1)
    with torch.no_grad():
        pred = inp.scores > 0 if loss == "bce" else inp.scores > 0.5
        acc = float((pred == (target > 0.5)).float().mean()) if len(target) else 0.0
    return value, {"loss/rm": float(value.detach()), "rm/label_accuracy": acc}


__all__ = ["bradley_terry_objective", "dpo_objective", "implicit_margin", "ipo_objective", "pair_mean",
           "rm_pointwise_objective", "seq_logp", "simpo_objective"]
