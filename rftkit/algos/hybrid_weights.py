"""Weighting and mixing rules of SFT<->RL hybrids as pure functions of training signals.

Not registered: the loop's weight controllers (rftkit/train/controllers.py) and rollout
side call them. Inputs are python floats, outputs python floats (or bools). Sources and
confirmation status: docs/hybrids_math.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from rftkit.algos.schedules import cosine


def chord_mu(step: int, *, warmup_steps: int = 0, decay_steps: int = 0, peak: float = 0.1,
             valley: float = 0.1) -> float:
    """CHORD's global SFT coefficient mu at a training step (loss (1 - mu) L_GRPO + mu L_SFT).

    CHORD, arXiv:2508.11408; copied from modelscope/Trinity-RFT chord_policy_loss.py
    `mu_schedule_function`: linear warm-up 0 -> peak over warmup_steps, cosine decay
    peak -> valley over decay_steps, then valley. Defaults are Trinity's (constant 0.1,
    CHORD-phi); CHORD-mu in the catalog: warmup 0, decay 200, peak 0.9, valley 0.05.
    """
    if step < warmup_steps:
        return step / warmup_steps * peak
    if step >= warmup_steps + decay_steps:
        return valley
    cos = 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / decay_steps))
    return (peak - valley) * cos + valley


def srft_weights(entropy: float, *, sft_coef: float = 0.5, rl_coef: float = 0.1) -> tuple[float, float]:
    """SRFT's entropy-aware weights (w_sft, w_rl) = (0.5 exp(-H), 0.1 exp(+H)), H = policy entropy.

    Fu et al. 2025, "SRFT: A Single-Stage Method with Supervised and Reinforcement Fine-Tuning
    for Reasoning" (arXiv:2506.19767). The abstract confirms "entropy-aware weighting"; the
    formulas come from a secondary note (Amier2/logseq_note pages/SRFT.md, transcribing the
    paper): L = w_sft NLL(demos) + L_RL(demos, off-policy PPO) + w_rl (-log pi(y+)) +
    log pi(y-), with w_sft = 0.5 sg(exp(-H)) (SFT weakened when the policy is uncertain).
    The note writes w_rl = 0.1 sg(exp(-H)) but its text says the positive-sample weight RISES
    with entropy; we follow the text (exp(+H)). The sign of w_rl's exponent is UNCONFIRMED.
    w_sft is an objective weight; w_rl multiplies only positive self-rollouts, which needs a
    per-row weight the loop does not have yet.
    """
    return sft_coef * math.exp(-entropy), rl_coef * math.exp(entropy)


def sasr_choose(grad_norm: float, grad_norm_ref: float, divergence: float, divergence_ref: float,
                u: float, *, a: float = 1.0, b: float = 1.0) -> tuple[bool, float]:
    """SASR-like switch: (use SFT this step?, p_sft), p_sft = sigmoid(a (g/g0 - 1) + b (d/d0 - 1)).

    SASR (Chen et al. 2025, arXiv:2505.13026) chooses SFT or GRPO step by step from the
    gradient norm and the divergence from the original distribution (abstract); its exact rule
    was NOT retrieved. This is the catalog's documented approximation (000-002 M12, [D]),
    UNCONFIRMED: g = gradient norm, d = distance to the SFT data (e.g. demo NLL), g0 / d0 their
    reference values; SFT iff u < p_sft, u ~ U[0, 1) supplied by the caller (pure function).
    Same rule as the `sasr` controller in rftkit/train/controllers.py.
    """
    if grad_norm_ref <= 0 or divergence_ref <= 0:
        p = 0.5
    else:
        z = a * (grad_norm / grad_norm_ref - 1.0) + b * (divergence / divergence_ref - 1.0)
        p = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
    return u < p, p


def amft_update(mu: float, entropy: float, target_entropy: float, meta_gradient: float = 0.0, *,
                meta_lr: float = 1e-4, entropy_lr: float = 5e-4, low: float = 0.05,
                high: float = 0.95) -> float:
    """AMFT controller step: mu <- clamp(mu + meta_lr g_meta + entropy_lr (H_target - H), low, high).

    AMFT (He et al. 2025, arXiv:2508.06944) - PAPER UNDER INVESTIGATION (catalog 000-002 M13:
    the listing says it is under investigation for possible academic misconduct; optional
    controller only). Copied from TSYJ-He/AMFT src/controller/adaptive_weight_controller.py
    `update_mu` (defaults mu0 0.5, meta_lr 1e-4, entropy_lr 5e-4, clip [0.05, 0.95]); mu
    weights SFT in mu L_SFT + (1 - mu) L_RL. g_meta: `amft_meta_gradient`.
    """
    return min(high, max(low, mu + meta_lr * meta_gradient + entropy_lr * (target_entropy - entropy)))


def amft_meta_gradient(val_grads: Sequence[Tensor], sft_grads: Sequence[Tensor],
                       rl_grads: Sequence[Tensor], policy_lr: float) -> float:
    """AMFT one-step-lookahead meta-gradient g = -lr <grad L_val, grad L_SFT - grad L_RL>.

    AMFT, arXiv:2508.06944 (paper under investigation); as in TSYJ-He/AMFT
    `compute_meta_gradient` (L_val = token cross-entropy on a validation
    batch; per-parameter gradient lists). Note: this equals dL_val/dmu after one step
    theta - lr (mu g_SFT + (1 - mu) g_RL), and `update_mu` ADDS it, i.e. moves mu up the
    validation loss; copied as written (paper under investigation, see `amft_update`).
    """
    dot = sum(float((v * (s - r)).sum()) for v, s, r in zip(val_grads, sft_grads, rl_grads))
    return -policy_lr * dot


def ghpo_hint_ratio(failed_rounds: int, *, levels: Sequence[float] = (0.25, 0.5, 0.75)) -> float | None:
    """GHPO hint ratio after `failed_rounds` all-fail groups in a row: 0 -> no hint, k -> levels[k-1],
    None when the levels are exhausted (keep the last group as it is).

    Liu et al. 2025, "GHPO: Adaptive Guidance for Stable and Efficient LLM Reinforcement
    Learning" (arXiv:2507.10628); checked against hkgc-1/GHPO src/ghpo/ghpo_trainer.py
    (`_generate_and_score_completions`): a group whose accuracy rewards are all <= 0 is
    re-sampled with the first round(len(solution) x w) characters of the reference solution
    appended to the prompt, w = 0.25, then 0.5, then 0.75 while it still all-fails (after
    `start_hint_step`). `ghpo_hint` cuts the hint.
    """
    if failed_rounds <= 0:
        return 0.0
    return float(levels[failed_rounds - 1]) if failed_rounds <= len(levels) else None


def ghpo_hint(solution: str, ratio: float) -> str:
    """The first round(len(solution) x ratio) characters of the solution (GHPO's hint text,
    hkgc-1/GHPO ghpo_trainer.py; Python's round, as there). arXiv:2507.10628."""
    return solution[: round(len(solution) * ratio)]


def prefix_ratio(progress: float, *, start: float = 0.95, end: float = 0.05) -> float:
    """Prefix-RFT's demonstration-prefix fraction: cosine decay start -> end over training.

    Prefix-RFT (arXiv:2507.01679): 95 % -> 5 % cosine decay, from secondary summaries
    (kiadev.net; catalog 001-003 #26 [O-page]); the paper text was not retrieved. Same as
    SCHEDULES `cosine` (the loop's `rl.prefix_ratio` already takes that schedule).
    """
    return cosine(progress, start=start, end=end)


def prefix_length(ratio: float, n_tokens: int) -> int:
    """Forced prefix length L_p = floor(ratio x |y*|) (catalog 000-002 M11, [L]). arXiv:2507.01679."""
    return int(math.floor(ratio * n_tokens))
