"""Weight controllers: objective weights set each step from training signals (not a schedule).

    controller.weights(weights, rng) -> (weights, metrics)    before the update
    controller.observe(metrics)                               after it

A stage names one with `controller: {name, params}`; it rescales the weights the objectives'
schedules give. Its state round-trips through checkpoints as JSON. With a controller, every
objective is evaluated each step even at weight 0, so the signals it reads stay measured.

    sasr   SASR-like switch between SFT and RL (an approximation, see its docstring)
    srft   SRFT's entropy-aware SFT weight 0.5 exp(-H) (the RL-side weight is not applied)
    amft   AMFT-like entropy-regularized balance mu (optional, see its docstring)
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from rftkit.algos.hybrid_weights import amft_update, sasr_choose, srft_weights
from rftkit.registry import Registry


class WeightController(Protocol):
    def weights(self, weights: dict[str, float], rng: random.Random) -> tuple[dict[str, float], dict[str, float]]: ...

    def observe(self, metrics: dict[str, float]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


CONTROLLERS: Registry[type] = Registry("weight controller")


@CONTROLLERS.register("sasr")
class SASRLike:
    """SASR-like step-wise choice between the SFT term and the RL term.

    Choose SFT with probability p_t = sigmoid(a (g_t / g_0 - 1) + b (d_t / d_0 - 1)) (`sasr_choose`),
    where g_t is the last gradient norm (`optim/grad_norm`) and d_t the last NLL of the
    demonstrations (`loss/sft`, the distance to the SFT data), g_0 and d_0 their first observed
    values. The chosen term keeps its weight, the other gets 0. SASR (Chen et al. 2025,
    arXiv:2505.13026) switches on these two signals, but its exact rule is unconfirmed: this is an
    approximation (docs/hybrids_math.md, section 3). Metrics: mix/sft_prob, mix/sft_chosen.
    """

    def __init__(self, *, sft: str = "sft", rl: str = "policy", a: float = 1.0, b: float = 1.0) -> None:
        self.sft, self.rl, self.a, self.b = sft, rl, a, b
        self.g0 = self.d0 = self.g = self.d = None

    def weights(self, weights, rng):
        u = rng.random()
        if self.g is None or self.d is None:
            use_sft, p = u < 0.5, 0.5
        else:
            use_sft, p = sasr_choose(self.g, self.g0, self.d, self.d0, u, a=self.a, b=self.b)
        out = dict(weights)
        out[self.rl if use_sft else self.sft] = 0.0
        return out, {"mix/sft_prob": p, "mix/sft_chosen": float(use_sft)}

    def observe(self, metrics):
        if "optim/grad_norm" in metrics:
            self.g = metrics["optim/grad_norm"]
            self.g0 = self.g0 or self.g
        if "loss/sft" in metrics:
            self.d = metrics["loss/sft"]
            self.d0 = self.d0 or self.d

    def state_dict(self):
        return {"g0": self.g0, "d0": self.d0, "g": self.g, "d": self.d}

    def load_state_dict(self, state):
        self.g0, self.d0, self.g, self.d = state["g0"], state["d0"], state["g"], state["d"]


@CONTROLLERS.register("amft")
class AMFTLike:
    """AMFT-like balance: L = mu L_SFT + (1 - mu) L_RL, mu <- clamp(mu + eta_H (H_target - H)).

    mu starts at 0.5, is clamped to [0.05, 0.95] and follows the entropy term of AMFT's controller
    (`amft_update`); the one-step-lookahead meta-gradient (a validation batch and a lookahead step)
    is not implemented. H is the policy's mean token entropy on its samples (`policy/entropy`).
    Treat it as an optional scheduler, not an established method: He et al. 2025, AMFT
    (arXiv:2508.06944); source and caveats in docs/hybrids_math.md, section 3. Metric: mix/mu.
    """

    def __init__(self, *, sft: str = "sft", rl: str = "policy", mu: float = 0.5, eta_h: float = 5e-4,
                 target_entropy: float = 0.5, low: float = 0.05, high: float = 0.95) -> None:
        self.sft, self.rl, self.mu, self.eta_h = sft, rl, mu, eta_h
        self.target, self.low, self.high = target_entropy, low, high

    def weights(self, weights, rng):
        out = dict(weights)
        out[self.sft] = weights.get(self.sft, 1.0) * self.mu
        out[self.rl] = weights.get(self.rl, 1.0) * (1 - self.mu)
        return out, {"mix/mu": self.mu}

    def observe(self, metrics):
        if "policy/entropy" in metrics:
            self.mu = amft_update(self.mu, metrics["policy/entropy"], self.target, 0.0, entropy_lr=self.eta_h,
                                  low=self.low, high=self.high)

    def state_dict(self):
        return {"mu": self.mu}

    def load_state_dict(self, state):
        self.mu = float(state["mu"])


@CONTROLLERS.register("srft")
class SRFTWeights:
    """SRFT's entropy-aware weighting of the demonstration term: w_sft = sft_coef * exp(-H).

    SRFT (Fu et al. 2025, arXiv:2506.19767); rule from `rftkit.algos.hybrid_weights.srft_weights`
    (what was confirmed: docs/hybrids_math.md, section 3). H is the policy's last mean token entropy on its
    samples (`policy/entropy`); the SFT term is weakened when the policy is uncertain. SRFT's
    second weight (on positive self-rollouts) needs per-row weights and is not applied here.
    Metric: mix/sft_weight.
    """

    def __init__(self, *, sft: str = "sft", sft_coef: float = 0.5) -> None:
        self.sft, self.sft_coef, self.entropy = sft, sft_coef, 0.0

    def weights(self, weights, rng):
        w = srft_weights(self.entropy, sft_coef=self.sft_coef)[0]
        out = dict(weights)
        out[self.sft] = weights.get(self.sft, 1.0) * w
        return out, {"mix/sft_weight": out[self.sft]}

    def observe(self, metrics):
        self.entropy = metrics.get("policy/entropy", self.entropy)

    def state_dict(self):
        return {"entropy": self.entropy}

    def load_state_dict(self, state):
        self.entropy = float(state["entropy"])
