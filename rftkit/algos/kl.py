"""KL estimators between the policy and a reference, per token (Schulman 2020, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html).

    KLFn(logp [N, T], ref_logp [N, T]) -> [N, T], estimating KL(pi || pi_ref) from samples of pi.
With log r = ref_logp - logp: k1 = -log r, k2 = (log r)^2 / 2, k3 = r - 1 - log r (>= 0).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from rftkit.registry import Registry

KL_ESTIMATORS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return 0.5 * (ref_logp - logp) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Unbiased and non-negative; the GRPO paper's choice (arXiv:2402.03300, eq. 4)."""
    log_r = ref_logp - logp
    return log_r.exp() - 1 - log_r
