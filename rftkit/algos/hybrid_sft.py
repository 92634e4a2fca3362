"""SFT-side objectives on demonstrations: DFT, ASFT (DFT + KL anchor), CHORD-phi, OTR.

    ObjectiveFn(inp: LossInputs, *, knobs) -> (scalar loss, metrics dict of floats)

They read the demonstration part of LossInputs: demo_logp [M, T] (current policy, with
grad), demo_mask [M, T] (1 on trained demonstration tokens) and, for ASFT, demo_ref_logp
[M, T] (the frozen reference on the same tokens, needs "ref_demos"); OTR also reads the full
next-token distribution demo_next_logp [M, T-1, V] (needs "demo_dist"). Notation: p = exp(demo_logp)
is the policy's probability of the demonstration token, sg = stop-gradient. Registered on
import of `rftkit.algos.hybrid`; formulas, sources and knobs are tabled in docs/hybrids_math.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from rftkit.algos.kl import KL_ESTIMATORS
from rftkit.algos.losses import AggName, masked_mean
from rftkit.algos.objectives import LossInputs, aggregate, demo_mask_of, objective


def need(inp: LossInputs, names: tuple[str, ...], who: str) -> None:
    """Raise a clear error when a LossInputs field an objective reads is missing."""
    missing = [n for n in names if getattr(inp, n) is None]
    if missing:
        raise ValueError(f"objective '{who}' needs LossInputs.{', LossInputs.'.join(missing)}")


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, numerically stable (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def binary_kl(logp: Tensor, ref_logp: Tensor, eps: float = 1e-6) -> Tensor:
    """KL(Bern(p_ref) || Bern(p)) over the two outcomes {demo token, any other token}; [M, T].

    = p_ref log(p_ref / p) + (1 - p_ref) log((1 - p_ref) / (1 - p)), with p, p_ref the policy's
    and the reference's probability of the demonstration token. By the chain rule of KL it is
    a lower bound of the full next-token KL(p_ref || p_theta) (equal iff both distributions
    agree conditioned on "not the demo token"), it is 0 iff p == p_ref, and its gradient with
    respect to the demo token's logit is p - p_ref, exactly the full KL's. Log-probs are
    clamped to <= -eps so that p = 1 stays finite (no gradient above 1 - 1e-6).
    """
    lp, lr = logp.clamp(max=-eps), ref_logp.clamp(max=-eps)
    pr = lr.exp()
    return pr * (lr - lp) + (1.0 - pr) * (_log1mexp(lr) - _log1mexp(lp))


def _dft_tokens(inp: LossInputs) -> tuple[Tensor, Tensor]:
    """Per-token DFT loss -sg(p) log p and the weight sg(p); both [M, T]."""
    p = inp.demo_logp.detach().exp()
    return -p * inp.demo_logp, p


@objective("dft", needs={"demos"})
def dft_objective(inp: LossInputs, *, agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """Dynamic Fine-Tuning: per-token loss -sg(p) log p on the demonstration tokens.

    The SFT loss rescaled by the (stop-gradient) probability of each token, so its gradient is
    p x the NLL gradient per token. Shapes: demo_logp, demo_mask [M, T]. Metrics: loss/dft,
    mix/sft_token_weight_mean (mean sg(p) over trained tokens). Wu et al. 2025, "On the
    Generalization of SFT" (arXiv:2508.05629); sources: docs/hybrids_math.md, section 1.
    """
    need(inp, ("demo_logp", "demo_mask"), "dft")
    per_token, p = _dft_tokens(inp)
    value = aggregate(agg, per_token, inp, demo_mask_of)
    return value, {"loss/dft": float(value.detach()),
                   "mix/sft_token_weight_mean": float(masked_mean(p, inp.demo_mask))}


@objective("asft", needs={"demos", "ref_demos"})
def asft_objective(inp: LossInputs, *, kl_weight: float = 0.1, anchor: str = "binary",
                   agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """Anchored SFT: DFT plus kl_weight x a KL anchor to the frozen reference, per token.

    The paper's anchor is the full next-token KL(p_ref || p_theta); LossInputs holds only the
    demonstration token's log-prob, so the anchor here is an APPROXIMATION: `anchor="binary"`
    (default) is `binary_kl`, a lower bound of the paper's term with the same gradient on the demo
    token's logit; `anchor` may also name a KL estimator (k1, k2, k3, ...) applied to (demo_logp,
    demo_ref_logp), a heuristic, since demo tokens are not samples of pi_theta. Equals `dft` when
    the policy equals the reference. Needs demo_logp, demo_mask, demo_ref_logp [M, T]. Metrics:
    loss/asft, mix/asft_anchor, mix/sft_token_weight_mean. Zhu et al. 2025, "Anchored Supervised
    Fine-Tuning" (arXiv:2509.23753); sources and the anchor: docs/hybrids_math.md, section 1.
    """
    need(inp, ("demo_logp", "demo_mask", "demo_ref_logp"), "asft")
    per_token, p = _dft_tokens(inp)
    if anchor == "binary":
        kl = binary_kl(inp.demo_logp, inp.demo_ref_logp)
    else:
        kl = KL_ESTIMATORS.get(anchor)(inp.demo_logp, inp.demo_ref_logp)
    value = aggregate(agg, per_token + kl_weight * kl, inp, demo_mask_of)
    return value, {"loss/asft": float(value.detach()),
                   "mix/asft_anchor": float(masked_mean(kl.detach(), inp.demo_mask)),
                   "mix/sft_token_weight_mean": float(masked_mean(p, inp.demo_mask))}


@objective("chord_sft", needs={"demos"})
def chord_sft_objective(inp: LossInputs, *, cutoff_prob: float = 1.0,
                        agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """CHORD-phi SFT term: per-token loss -sg(phi(p)) log p with phi(p) = p (1 - p).

    phi down-weights tokens the policy finds near-certain or very unlikely; `cutoff_prob` < 1
    clamps log p at log(cutoff_prob), so tokens above the cutoff get no gradient. The global
    coefficient mu is not here: CHORD's loss is (1 - mu) L_GRPO + mu L_SFT, so give this objective
    weight mu and `policy` weight 1 - mu (schedules for mu: docs/hybrids_math.md, "CHORD's mu").
    Shapes: demo_logp, demo_mask [M, T]. Metrics: loss/chord_sft, mix/sft_token_weight_mean (mean
    phi). Zhang et al. 2025, CHORD (arXiv:2508.11408); source: docs/hybrids_math.md, section 1.
    """
    need(inp, ("demo_logp", "demo_mask"), "chord_sft")
    if not 0.0 < cutoff_prob <= 1.0:
        raise ValueError(f"chord_sft cutoff_prob must be in (0, 1], got {cutoff_prob}")
    p = inp.demo_logp.detach().exp()
    phi = p * (1.0 - p)
    logp = inp.demo_logp if cutoff_prob >= 1.0 else inp.demo_logp.clamp(max=math.log(cutoff_prob))
    value = aggregate(agg, -phi * logp, inp, demo_mask_of)
    return value, {"loss/chord_sft": float(value.detach()),
                   "mix/sft_token_weight_mean": float(masked_mean(phi, inp.demo_mask))}


@torch.no_grad()
def otr_samples(logp_all: Tensor, mask: Tensor, *, k: int, temperature: float,
                generator: torch.Generator | None = None) -> Tensor:
    """K candidate tokens per trained position from the exploratory policy softmax(logits / temperature).

    Shapes: logp_all [N, T, V] (log pi; softmax(log pi / kappa) = softmax(logits / kappa)),
    mask [N, T] -> samples [N, T, K] (long). Positions off the mask get token 0 and are never read.
    Only the masked rows are tempered and sampled, in place, so the extra memory is one
    [n_masked, V] tensor without grad. Pass a seeded `generator` for reproducible draws (the loop
    does, see otr_objective).
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"otr needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    keep = mask > 0
    out = torch.zeros(*mask.shape, k, dtype=torch.long, device=logp_all.device)
    if bool(keep.any()):
        # exp((l - max) / kappa) in place on the one copy indexing makes; multinomial normalizes itself
        w = logp_all.detach()[keep].float().div_(temperature)
        w = w.sub_(w.amax(-1, keepdim=True)).exp_()
        out[keep] = torch.multinomial(w, k, replacement=True, generator=generator)
    return out


def otr_token_loss(logp_all: Tensor, targets: Tensor, mask: Tensor, samples: Tensor, *,
                   wrong_reward: float = -0.1) -> tuple[Tensor, dict]:
    """One-Token Rollout per-token loss: -(1/K) sum_j R_j log pi(a_j), R_j = 1 if a_j == target else beta.

    The REINFORCE estimate of each position as a one-step episode (no baseline, no importance
    weight). Shapes: logp_all [N, T, V] (log pi, with grad), targets [N, T] (ground-truth ids), mask
    [N, T], samples [N, T, K] (`otr_samples`) -> (per-token loss [N, T], zero off the mask; metrics).
    beta = `wrong_reward` must be < 1: drawn from pi itself (temperature 1) the expected gradient is
    then (1 - beta) p grad log p, a positive multiple of DFT's (sum_a pi(a) grad log pi(a) = 0), so a
    negative beta pushes down the sampled wrong tokens and, in expectation, pulls up the target.
    Metrics: mix/otr_hit_rate (share of samples equal to the target), mix/otr_target_sampled (share
    of positions where at least one sample hit it; the others get no direct pull towards the target).
    """
    if wrong_reward >= 1.0:
        raise ValueError(f"otr wrong_reward must be < 1 (the target's reward), got {wrong_reward}")
    lp = logp_all.gather(-1, samples)  # [N, T, K], with grad
    hit = samples == targets.unsqueeze(-1)
    reward = torch.where(hit, 1.0, wrong_reward).to(lp.dtype)
    per_token = -(reward * lp).mean(-1) * mask
    keep = mask > 0
    n = keep.sum().clamp(min=1)
    metrics = {"mix/otr_hit_rate": float(hit[keep].float().mean()) if bool(keep.any()) else 0.0,
               "mix/otr_target_sampled": float(hit.any(-1)[keep].sum() / n)}
    return per_token, metrics


@objective("otr", needs={"demos", "demo_dist"})
def otr_objective(inp: LossInputs, *, k: int = 256, temperature: float = 1.3, wrong_reward: float = -0.1,
                  agg: AggName = "token_mean") -> tuple[Tensor, dict]:
    """One-Token Rollout: each demonstration position is a one-step RL episode scored by the gold token.

    K candidates per position from softmax(logits / temperature) (`otr_samples`), the per-token
    loss `otr_token_loss`, then `agg` over demo_mask. No official code was found: the loss form is
    a reconstruction (what is confirmed and what is not: docs/hybrids.md, "One-Token Rollout").
    Samples come from a torch.Generator seeded by LossInputs.seed (the step seed per micro-batch),
    never the global RNG. Needs demo_next_logp [M, T-1, V], demo_tokens, demo_mask [M, T], seed.
    Metrics: loss/otr, mix/otr_hit_rate, mix/otr_target_sampled. Ming et al. 2025, "One-Token
    Rollout" (arXiv:2509.26313).
    """
    need(inp, ("demo_next_logp", "demo_tokens", "demo_mask", "seed"), "otr")
    logp_all = inp.demo_next_logp
    targets, mask = inp.demo_tokens[:, 1:], inp.demo_mask[:, 1:]  # aligned with demo_next_logp
    gen = torch.Generator(device=logp_all.device)
    gen.manual_seed(inp.seed)
    samples = otr_samples(logp_all, mask, k=k, temperature=temperature, generator=gen)
    per_token, metrics = otr_token_loss(logp_all, targets, mask, samples, wrong_reward=wrong_reward)
    per_token = F.pad(per_token, (1, 0))  # back to [M, T]; position 0 (bos) is never a target
    value = aggregate(agg, per_token, inp, demo_mask_of)
    metrics["loss/otr"] = float(value.detach())
    return value, metrics
