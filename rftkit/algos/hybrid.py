"""The pure math of SFT<->RL hybrid methods (docs/hybrids_math.md). Importing this module registers:

    OBJECTIVES      dft, asft, chord_sft, otr     (demonstrations; hybrid_sft.py)
                    prefix_sft, teacher_kl        (rollouts; hybrid_rl.py)
    POLICY_LOSSES   luffy, rl_plus                (mixed on/off-policy groups; hybrid_rl.py)

and exposes the weighting rules the loop's controllers call (hybrid_weights.py, not
registered): chord_mu, srft_weights, sasr_choose, amft_update, amft_meta_gradient.
GHPO's hints and Prefix-RFT's prefixes are cut on the rollout side (`demo_prefix`), not here.

Shapes follow rftkit.algos.objectives.LossInputs: rollout tensors [N, T], offpolicy [N],
demonstration tensors [M, T]. Each part's docstring names its paper (arXiv id), the source
its formula was checked against, and what is unconfirmed; docs/hybrids_math.md tables them.
OTR (arXiv:2509.26313) reads the demonstrations' full next-token distribution
(LossInputs.demo_next_logp, need "demo_dist") and samples with LossInputs.seed.
"""

from __future__ import annotations

from rftkit.algos import hybrid_rl, hybrid_sft  # noqa: F401  (registers the parts)
from rftkit.algos.hybrid_rl import (
    luffy_loss,
    prefix_sft_objective,
    rl_plus_loss,
    teacher_kl_objective,
)
from rftkit.algos.hybrid_sft import (
    asft_objective,
    binary_kl,
    chord_sft_objective,
    dft_objective,
    otr_objective,
    otr_samples,
    otr_token_loss,
)
from rftkit.algos.hybrid_weights import (
    amft_meta_gradient,
    amft_update,
    chord_mu,
    sasr_choose,
    srft_weights,
)

__all__ = [
    "amft_meta_gradient", "amft_update", "asft_objective", "binary_kl", "chord_mu",
    "chord_sft_objective", "dft_objective", "luffy_loss", "otr_objective", "otr_samples",
    "otr_token_loss", "prefix_sft_objective", "rl_plus_loss", "sasr_choose", "srft_weights",
    "teacher_kl_objective",
]
