"""Weighting rules of SFT<->RL hybrids as pure functions of training signals.

Not registered: the loop's weight controllers (rftkit/train/controllers.py) call them. Inputs
are python floats (or per-parameter gradient lists), outputs python floats (or bools). Sources
and what is unconfirmed: docs/hybrids_math.md, section 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor


def chord_mu(step: int, *, warmup_steps: int = 0, decay_steps: int = 0, peak: float = 0.1,
             valley: float = 0.1) -> float:
    """CHORD's global SFT coefficient mu at a training step (loss (1 - mu) L_GRPO + mu L_SFT).

    Linear warm-up 0 -> peak over warmup_steps, cosine decay peak -> valley over decay_steps,
    then valley. The defaults are a constant 0.1 (CHORD-phi). CHORD, arXiv:2508.11408; source:
    docs/hybrids_math.md, section 3.
    """
    if step < warmup_steps:
        return step / warmup_steps * peak
    if step >= warmup_steps + decay_steps:
        return valley
    cos = 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / decay_steps))
    return (peak - valley) * cos + valley


def srft_weights(entropy: float, *, sft_coef: float = 0.5, rl_coef: float = 0.1) -> tuple[float, float]:
    """SRFT's entropy-aware weights (w_sft, w_rl) = (0.5 exp(-H), 0.1 exp(+H)), H = policy entropy.

    w_sft weights the demonstration NLL (weaker when the policy is uncertain); w_rl weights the
    positive self-rollouts, which needs a per-row weight the loop does not have yet. The sign of
    w_rl's exponent is unconfirmed. Fu et al. 2025, "SRFT" (arXiv:2506.19767); sources:
    docs/hybrids_math.md, section 3.
    """
    return sft_coef * math.exp(-entropy), rl_coef * math.exp(entropy)


def sasr_choose(grad_norm: float, grad_norm_ref: float, divergence: float, divergence_ref: float,
                u: float, *, a: float = 1.0, b: float = 1.0) -> tuple[bool, float]:
    """SASR-like switch: (use SFT this step?, p_sft), p_sft = sigmoid(a (g/g0 - 1) + b (d/d0 - 1)).

    g = gradient norm, d = distance to the SFT data (e.g. demo NLL), g0 / d0 their reference
    values; SFT iff u < p_sft, with u ~ U[0, 1) supplied by the caller. An approximation of SASR
    (Chen et al. 2025, arXiv:2505.13026), whose exact rule is unconfirmed (docs/hybrids_math.md,
    section 3). Same rule as the `sasr` controller in rftkit/train/controllers.py.
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

    mu weights SFT in mu L_SFT + (1 - mu) L_RL; g_meta comes from `amft_meta_gradient`. Defaults as
    in the AMFT code (mu0 0.5, meta_lr 1e-4, entropy_lr 5e-4, clip [0.05, 0.95]). He et al. 2025,
    AMFT (arXiv:2508.06944); source and caveats: docs/hybrids_math.md, section 3.
    """
    return min(high, max(low, mu + meta_lr * meta_gradient + entropy_lr * (target_entropy - entropy)))


def amft_meta_gradient(val_grads: Sequence[Tensor], sft_grads: Sequence[Tensor],
                       rl_grads: Sequence[Tensor], policy_lr: float) -> float:
    """AMFT one-step-lookahead meta-gradient g = -lr <grad L_val, grad L_SFT - grad L_RL>.

    Per-parameter gradient lists; L_val is a token cross-entropy on a validation batch. g equals
    dL_val/dmu after one step theta - lr (mu g_SFT + (1 - mu) g_RL), and `amft_update` adds it, so
    it moves mu up the validation loss, as the AMFT code does. arXiv:2508.06944; docs/hybrids_math.md.
    """
    dot = sum(float((v * (s - r)).sum()) for v, s, r in zip(val_grads, sft_grads, rl_grads))
    return -policy_lr * dot
