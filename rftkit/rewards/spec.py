"""The typed reward composition: a `RewardSpec` is a weighted sum of named components.

    Component(name, verifier | fn, weight, gate, isolation, params)
        verifier: a VERIFIERS name, called per sample as verifier(problem, completion, **params);
                  None = the verifier each problem names (problem.verifier), the default
        fn:       a batch reward fn(prompts, completions, answers) -> list[float]
                  (a user file via load_reward_fn, a RewardModel, an RLPRReward)
        gate:     the total is `spec.gate_penalty` for a sample whose gate score is < 1
                  (format gates: correctness counts only when the format is right)
    RewardSpec(components, primary, gate_penalty, cosine, overlong)
        total_i = gate_i ? sum_c weight_c * score_c,i (+ overlong_i) : gate_penalty (+ overlong_i)
        with the primary component's term replaced by weight * cosine(correct_i, length_i) when
        `cosine` is set (Yeo et al. 2025). `primary` (default: the first component) names the
        component whose verdict is returned: its score says whether a sample is correct.

A component's isolation says where it runs: "inline" (in order, on one thread with the caller's
torch state and a per-call timeout; built-in pure verifiers, linear in their input, reward
models), "thread" (code that enforces its own timeouts, e.g. the sandbox), "process" (a worker
process with a hard per-call timeout: math-verify, regex, user files);
"auto" takes the verifier's declared default (`@isolation("process")`), else inline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rftkit.registry import Bound
from rftkit.types import Verdict

ISOLATIONS = ("auto", "inline", "thread", "process")
BatchRewardFn = Callable[[list[str], list[str], list[str]], list[float]]


def isolation(mode: str) -> Callable:
    """Declare where a verifier runs by default (read by the runner when isolation="auto")."""
    if mode not in ISOLATIONS[1:]:
        raise ValueError(f"isolation must be one of {ISOLATIONS[1:]}, got {mode!r}")

    def deco(fn):
        fn.isolation = mode
        return fn

    return deco


def isolation_of(fn: Any) -> str:
    """Declared isolation of a verifier or batch fn; a registry `Bound` (a verifier with its
    knobs) and a functools.partial are looked through to the function."""
    target = fn.fn if isinstance(fn, Bound) else getattr(fn, "func", fn)
    return getattr(fn, "isolation", getattr(target, "isolation", "inline"))


@dataclass(frozen=True)
class Component:
    """One named term of the reward; logged as reward/<name>/mean."""

    name: str
    verifier: str | None = None
    fn: BatchRewardFn | None = None
    weight: float = 1.0
    gate: bool = False
    isolation: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 0
    """Batch fns only: samples per call (0 = the whole batch in one call)."""

    def __post_init__(self) -> None:
        if self.verifier is not None and self.fn is not None:
            raise ValueError(f"component '{self.name}': give a verifier or a fn, not both")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"component '{self.name}': isolation must be one of {ISOLATIONS}")
        if "/" in self.name or not self.name:
            raise ValueError(f"component name {self.name!r} must be non-empty and without '/'")


@dataclass(frozen=True)
class CosineLength:
    """Cosine length-scaling reward (Yeo et al. 2025, arXiv:2502.03373; see shaping.cosine_length_reward)."""

    max_len: int
    r0_correct: float = 2.0
    rL_correct: float = 1.0
    r0_wrong: float = -10.0
    rL_wrong: float = 0.0
    r_exceed: float = -10.0
    margin: int = 0
    repetition_penalty: float = 0.0
    ngram: int = 20


@dataclass(frozen=True)
class Overlong:
    """DAPO soft overlong punishment (rftkit.algos.shaping.dapo_overlong_penalty), added to the total."""

    max_len: int
    cache_len: int


@dataclass(frozen=True)
class RewardSpec:
    components: tuple[Component, ...] = (Component("correct"),)
    primary: str | None = None
    gate_penalty: float = 0.0
    cosine: CosineLength | None = None
    overlong: Overlong | None = None

    def __post_init__(self) -> None:
        names = [c.name for c in self.components]
        if not names:
            raise ValueError("a RewardSpec needs at least one component")
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        if self.primary is not None and self.primary not in names:
            raise ValueError(f"primary '{self.primary}' is not a component ({', '.join(names)})")

    @property
    def primary_name(self) -> str:
        return self.primary or self.components[0].name


@dataclass(frozen=True)
class RewardVerdict(Verdict):
    """A Verdict (score, parsed, reason of the primary component; score in [0, 1]) plus the
    shaped total `reward` the loop trains on and every component's score."""

    reward: float = 0.0
    components: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardFailure:
    """A component call that raised or timed out, with the offending sample (for the log)."""

    component: str
    index: int
    kind: str  # "error" | "timeout"
    message: str
    prompt: str
    completion: str

    def log_line(self, max_chars: int = 300) -> str:
        return (f"reward {self.kind} in '{self.component}' (sample {self.index}): {self.message} | "
                f"prompt={self.prompt[:max_chars]!r} completion={self.completion[:max_chars]!r}")


__all__ = ["Component", "CosineLength", "Overlong", "RewardSpec", "RewardVerdict", "RewardFailure",
           "BatchRewardFn", "isolation", "isolation_of", "ISOLATIONS"]
