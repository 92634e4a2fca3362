"""KL estimators between the policy and a reference, per token (Schulman 2020, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html).

    KLFn(logp [N, T], ref_logp [N, T]) -> [N, T], estimating KL(pi || pi_ref) from samples of pi.
With log r = ref_logp - logp: k1 = -log r, k2 = (log r)^2 / 2, k3 = r - 1 - log r (>= 0).
The names `low_var_kl`, `abs` and `mse` are verl's `kl_penalty` modes
(verl/trainer/ppo/core_algos.py), kept so verl recipes translate one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from torch import Tensor

from rftkit.registry import PartName, Registry

KL_ESTIMATORS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("KL estimator")
KLName = Annotated[str, PartName(KL_ESTIMATORS)]


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log pi - log pi_ref: unbiased, high variance, can be negative
    (http://joschu.net/blog/kl-approx.html; verl 'kl'/'k1'). Shapes: [N, T] -> [N, T]."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = (log pi - log pi_ref)^2 / 2: biased, low variance, >= 0
    (http://joschu.net/blog/kl-approx.html). Its gradient is the reverse-KL gradient, which is
    why REINFORCE++ (arXiv:2501.03262) prefers it in the loss. Shapes: [N, T] -> [N, T]."""
    return 0.5 * (ref_logp - logp) ** 2


@KL_ESTIMATORS.register("mse")
def kl_mse(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """verl's 'mse' mode: identical to k2, 0.5 (log pi - log pi_ref)^2
    (https://github.com/volcengine/verl, core_algos.kl_penalty). Shapes: [N, T] -> [N, T]."""
    return kl_k2(logp, ref_logp)


@KL_ESTIMATORS.register("abs")
def kl_abs(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """|log pi - log pi_ref|, verl's 'abs' mode (https://github.com/volcengine/verl,
    core_algos.kl_penalty, from TRL's PPO trainer). Shapes: [N, T] -> [N, T]."""
    return (logp - ref_logp).abs()


@KL_ESTIMATORS.register("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = r - 1 - log r, r = pi_ref / pi: unbiased and non-negative; the GRPO paper's choice
    (arXiv:2402.03300, eq. 4). Zero iff logp == ref_logp. Shapes: [N, T] -> [N, T]."""
    log_r = ref_logp - logp
    return log_r.exp() - 1 - log_r


@KL_ESTIMATORS.register("low_var_kl")
def kl_low_var(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 with verl's numerical guards: log r clamped to [-20, 20], result clamped to [-10, 10].

    verl `kl_penalty(..., "low_var_kl")` (https://github.com/volcengine/verl,
    verl/trainer/ppo/core_algos.py); the KL-in-loss default of GRPO recipes on verl
    (`kl_loss_type: low_var_kl`). Equals k3 when |log r| is moderate. Shapes: [N, T] -> [N, T].
    """
    log_r = (ref_logp - logp).clamp(-20.0, 20.0)
    return (log_r.exp() - log_r - 1).clamp(-10.0, 10.0)
