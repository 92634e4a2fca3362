"""More policy losses (same signature as `rftkit.algos.losses`, registered in POLICY_LOSSES):
gspo (sequence-level ratio), cispo (clipped IS weight), nft (negative-aware fine-tuning),
clip_cov / kl_cov (covariance-based entropy control).

    PolicyLossFn(logp [N, T], old_logp [N, T], advantages [N, T], mask [N, T], *, knobs)
        -> (per-token loss [N, T], metrics dict of floats)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rftkit.algos.losses import POLICY_LOSSES, _log_ratio, masked_mean, ratio_metrics


@POLICY_LOSSES.register("gspo", inert_at_zero_advantage=True)  # A * s_i: s_i reads only its own row
def gspo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
              clip_low: float = 3e-4, clip_high: float = 4e-4) -> tuple[Tensor, dict]:
    """GSPO: PPO clipping on the length-normalized sequence ratio s_i = (pi/pi_old)(o_i)^(1/|o_i|).

    Zheng et al. 2025, "Group Sequence Policy Optimization" (arXiv:2507.18071), eq. 5-7,
    clipping ranges 3e-4 / 4e-4 as in the paper. Token form (GSPO-token, checked against
    verl `compute_policy_loss_gspo`): s_i,t = sg(s_i) * pi / sg(pi), log clamped at 10, so the
    value is s_i and the gradient is s_i grad log pi(o_t); loss = max(-A s, -A clip(s)).
    With a sequence-level advantage this is exactly GSPO. Use `agg: seq_mean_token_mean`
    (verl forces it). Shapes: all [N, T] -> per-token loss [N, T]; ratio metrics use s_i.
    """
    lr = _log_ratio(logp, old_logp, mask)
    seq_lr = lr.sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
    log_s = (logp - logp.detach() + seq_lr.detach()[:, None]).clamp(max=10.0)
    s = log_s.exp()
    l1 = -advantages * s
    l2 = -advantages * s.clamp(1.0 - clip_low, 1.0 + clip_high)
    metrics = ratio_metrics(seq_lr.detach()[:, None].expand_as(mask) * mask, mask, l2 > l1)
    return torch.maximum(l1, l2), metrics


@POLICY_LOSSES.register("cispo", inert_at_zero_advantage=True)
def cispo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
               clip_low: float = 1.0, clip_high: float = 0.28) -> tuple[Tensor, dict]:
    """CISPO: loss = -sg(clip(rho, 1 - eps_low, 1 + eps_high)) * A * log pi(o_t).

    MiniMax 2025, "MiniMax-M1" (arXiv:2506.13585), eq. 4: clip the importance-sampling
    weight instead of dropping tokens, so every token keeps a gradient. The paper sets no
    lower bound ("eps_low large"); defaults clip_low=1.0 (bound 0) and clip_high=0.28 follow
    Trinity-RFT `CISPOPolicyLossFn`. policy/clipfrac = share of tokens whose weight was cut.
    Use `agg: token_mean` (the paper's 1/sum|o_i|). Shapes: all [N, T] -> [N, T].
    """
    lr = _log_ratio(logp, old_logp, mask)
    ratio = lr.exp().detach()
    weight = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return -weight * advantages * logp, ratio_metrics(lr, mask, weight != ratio)




def _clamp_keep_grad(x: Tensor, lo: float) -> Tensor:
    """Value clamped below at lo, gradient of x kept (NFT `clamp_preserve_grad`)."""
    return x + (x.clamp(min=lo) - x).detach()


@POLICY_LOSSES.register("nft", extra_inputs=("rewards", "group_reward_mean"))
def nft_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
             rewards: Tensor | None = None, group_reward_mean: Tensor | None = None, *,
             neg_weight: float = 1.0, normalize: Literal[0, 1, 2] = 1, clamp_positive: float = 0.0,
             clamp_negative: float = 1.0, rate_clip: float = 0.02) -> tuple[Tensor, dict]:
    """NFT: likelihood on correct answers, implicit negative policy on wrong ones.

    Chen et al. 2025, "Bridging Supervised Learning and Reinforcement Learning in Math
    Reasoning" (arXiv:2505.18116); checked against NVlabs/NFT `dp_actor.py` (token ratio)
    and `ray_nft_trainer.py`. With c = correctness (rewards in [0, 1]), r = clamp(group mean
    of c, rate_clip, 1 - rate_clip), R = exp(min(logp - old_logp, 10)):
        L+ = -log max_g(R, clamp_positive),  L- = -log max_g((1 - r R) / (1 - r), clamp_negative)
        loss = c L+ + (1 - c) neg_weight L-, times (1 - r) if normalize = 1,
        sqrt((1 - r) / r) if normalize = 2 (max_g: value clamped, gradient kept).
    Defaults are the official train_7B.sh (neg_weight 1; 0 gives RFT). At old_logp = logp its
    gradient equals pg with `dr_grpo` advantages (normalize=1) or with GRPO advantages using
    the population std (normalize=2; rftkit's `grpo` uses the unbiased std, a factor
    sqrt((G-1)/G)). Needs LossInputs `rewards` [N] and `group_reward_mean` [N]; the
    advantages are not used. Shapes: [N, T] -> [N, T].
    """
    if rewards is None or group_reward_mean is None:
        raise ValueError("policy loss 'nft' needs LossInputs.rewards and LossInputs.group_reward_mean")
    c = rewards.float()
    if bool((c < 0).any() or (c > 1).any()):
        raise ValueError("policy loss 'nft' needs rewards in [0, 1] (correctness)")
    if not 0.0 < rate_clip < 0.5:  # r = 0 or 1 (an all-wrong or all-right group) divides by zero: NaN
        raise ValueError(f"nft rate_clip must be in (0, 0.5), got {rate_clip}")
    rate = group_reward_mean.float().clamp(rate_clip, 1.0 - rate_clip)[:, None]
    lr = _log_ratio(logp, old_logp, mask)
    ratio = lr.clamp(max=10.0).exp()
    pos = -torch.log(_clamp_keep_grad(ratio, clamp_positive))
    neg = -torch.log(_clamp_keep_grad((1.0 - rate * ratio) / (1.0 - rate), abs(clamp_negative)))
    loss = c[:, None] * pos + (1.0 - c[:, None]) * neg_weight * neg
    if normalize == 1:
        loss = loss * (1.0 - rate)
    elif normalize == 2:
        loss = loss * ((1.0 - rate) / rate).sqrt()
    elif normalize != 0:
        raise ValueError(f"nft normalize must be 0, 1 or 2, got {normalize}")
    return loss, ratio_metrics(lr, mask, torch.zeros_like(mask, dtype=torch.bool))




def _centered_cov(advantages: Tensor, logp: Tensor, mask: Tensor) -> Tensor:
    """Per-token (A - mean A)(log pi - mean log pi), means over masked tokens; [N, T]."""
    lp = logp.detach()
    return (advantages - masked_mean(advantages, mask)) * (lp - masked_mean(lp, mask))


@POLICY_LOSSES.register("clip_cov")
def clip_cov_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                  clip_low: float = 0.2, clip_high: float = 0.2, clip_frac: float = 2e-4,
                  cov_lb: float = 1.0, cov_ub: float = 5.0) -> tuple[Tensor, dict]:
    """Clip-Cov: ppo_clip, plus a random few tokens with cov in (lb, ub) get no gradient.

    Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs" (arXiv:2505.22617);
    checked against the official PRIME-RL/Entropy-Mechanism-of-RL `compute_policy_loss_clip_cov`
    (ported in verl): cov = (A - mean A)(log pi - mean log pi); among tokens not already
    clipped with lb < cov < ub, max(1, int(clip_frac * #tokens)) chosen uniformly at random
    (torch's global RNG) are zeroed. policy/clipfrac here is the share of zeroed tokens, as
    in the official code. Shapes: all [N, T] -> [N, T].
    """
    lr = _log_ratio(logp, old_logp, mask)
    ratio = lr.exp()
    l1, l2 = -advantages * ratio, -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    cov = _centered_cov(advantages, logp, mask)
    cand = ((cov > cov_lb) & (cov < cov_ub) & (mask > 0) & ~(l2 > l1)).nonzero()
    n_clip = max(int(clip_frac * float(mask.sum())), 1)
    pick = cand[torch.randperm(len(cand), device=cand.device)[:n_clip]]
    keep = torch.ones_like(ratio)
    keep[pick[:, 0], pick[:, 1]] = 0.0
    return torch.maximum(l1, l2) * keep, ratio_metrics(lr, mask, keep == 0)


@POLICY_LOSSES.register("kl_cov")
def kl_cov_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                top_frac: float = 2e-3, kl_coef: float = 1.0) -> tuple[Tensor, dict]:
    """KL-Cov: unclipped -A rho, plus kl_coef * |log rho| on the top-k tokens by covariance.

    Cui et al. 2025 (arXiv:2505.22617); checked against the official
    `compute_policy_loss_kl_cov` (k_percent = 0.2 %, ppo_kl_coef = 1) and verl's port:
    k = max(1, int(top_frac * #tokens)) largest (A - mean A)(log pi - mean log pi).
    Extra metric policy/kl_abs = mean |log rho|. Shapes: all [N, T] -> [N, T].
    """
    lr = _log_ratio(logp, old_logp, mask)
    loss = -advantages * lr.exp()
    m = mask > 0
    cov = _centered_cov(advantages, logp, mask)[m]
    top = torch.zeros_like(cov, dtype=torch.bool)
    if cov.numel() > 0:
        top[torch.topk(cov, max(1, int(top_frac * cov.numel()))).indices] = True
    sel = torch.zeros_like(m)
    sel[m] = top
    loss = torch.where(sel, loss + kl_coef * lr.abs(), loss)
    metrics = ratio_metrics(lr, mask, sel)
    metrics["policy/kl_abs"] = float(masked_mean(lr.detach().abs(), mask))
    return loss, metrics
