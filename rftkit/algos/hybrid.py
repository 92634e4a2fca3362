"""The pure math of SFT<->RL hybrid methods (issue 4). Importing this module registers:

    OBJECTIVES      dft, asft, chord_sft          (demonstrations; hybrid_sft.py)
                    prefix_sft, teacher_kl        (rollouts; hybrid_rl.py)
    POLICY_LOSSES   luffy, rl_plus                (mixed on/off-policy groups; hybrid_rl.py)

and exposes the weighting rules the loop's controllers call (hybrid_weights.py, not
registered): chord_mu, srft_weights, sasr_choose, amft_update, amft_meta_gradient,
ghpo_hint_ratio, ghpo_hint, prefix_ratio, prefix_length.

Shapes follow rftkit.algos.objectives.LossInputs: rollout tensors [N, T], offpolicy [N],
demonstration tensors [M, T]. Each part's docstring names its paper (arXiv id), the source
its formula was checked against, and what is unconfirmed; docs/hybrids_math.md tables them.
Left out: One-Token Rollout (OTR, arXiv:2509.26313) - it samples K candidate tokens from the
policy's full next-token distribution at every demonstration position, and LossInputs holds
only the demonstration token's log-prob and the entropy; it would need the demonstration
logits (`demo_logits [M, T, V]`, with grad) or K sampled tokens per position with their
log-probs (`demo_sample_logp [M, T, K]`, with grad) and hit flags (`demo_sample_hit [M, T, K]`).
"""

from __future__ import annotations

from rftkit.algos import hybrid_rl, hybrid_sft  # noqa: F401  (registers the parts)
from rftkit.algos.hybrid_rl import luffy_loss, prefix_sft_objective, rl_plus_loss, teacher_kl_objective
from rftkit.algos.hybrid_sft import asft_objective, binary_kl, chord_sft_objective, dft_objective
from rftkit.algos.hybrid_weights import (amft_meta_gradient, amft_update, chord_mu, ghpo_hint,
                                         ghpo_hint_ratio, prefix_length, prefix_ratio, sasr_choose,
                                         srft_weights)

__all__ = [
    "dft_objective", "asft_objective", "chord_sft_objective", "binary_kl",
    "luffy_loss", "rl_plus_loss", "prefix_sft_objective", "teacher_kl_objective",
    "chord_mu", "srft_weights", "sasr_choose", "amft_update", "amft_meta_gradient",
    "ghpo_hint_ratio", "ghpo_hint", "prefix_ratio", "prefix_length",
]
