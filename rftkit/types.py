"""Typed containers passed between the parts of the loop.

Notation used in every shape comment of rftkit:
    B = prompts in a step, G = samples per prompt (group size), N = B * G rollouts,
    M = demonstrations in a step, T = padded sequence length (prompt + completion),
    V = vocabulary size.

Token layout: sequences are right-padded, `tokens[i, :prompt_len[i]]` is the prompt and
the completion follows. Per-token tensors are aligned with `tokens`: `logp[i, t]` is
log p(tokens[i, t] | tokens[i, :t]) and `mask[i, t] = 1` where tokens[i, t] is a trained
completion token (position 0 is never trained).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

# The built-in tasks end every completion with ANSWER_MARKER + final answer, so one parser
# serves all of them ("...trace...#579").
ANSWER_MARKER = "#"


class Image:
    """An RGB image of a problem: pixels uint8 [H, W, 3], named by its content.

    `key` is a 40-bit hash of the pixels (and shape): equal pixels give equal keys in every
    process, so a prompt's image tokens (rftkit/model/vision.py) name the image they stand
    for, and images compare and hash by key. Build one with `Image(array)`: grayscale
    [H, W] / [H, W, 1] and RGBA [H, W, 4] are converted to RGB (alpha dropped), float arrays
    in [0, 1] are scaled to 0..255; anything else is a ValueError.
    """

    __slots__ = ("pixels", "key")

    def __init__(self, pixels) -> None:
        arr = as_rgb(pixels)
        arr.flags.writeable = False
        digest = hashlib.blake2b(arr.tobytes() + str(arr.shape).encode(), digest_size=5).digest()
        self.pixels = arr
        self.key = int.from_bytes(digest, "big")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.key == self.key

    def __hash__(self) -> int:
        return self.key

    def __repr__(self) -> str:
        return f"Image({self.size[0]}x{self.size[1]}, key={self.key:010x})"

    def __reduce__(self):  # pickles as its pixels (reward workers get problems by pickle)
        return (Image, (self.pixels,))


def as_rgb(pixels) -> np.ndarray:
    """uint8 [H, W, 3] from an array-like image: gray and RGBA converted, floats in [0, 1] scaled."""
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"an image should be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError("a float image should hold values in [0, 1]")
        arr = np.rint(arr * 255)
    elif arr.dtype.kind not in "ui" or arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"an image should be uint8 (or integers in 0..255, or floats in [0, 1]), got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


@dataclass(frozen=True)
class Problem:
    """One example: a prompt with what is needed to check (and demonstrate) its answer.

    `demo` is a full completion (trace + marker + answer) or None when the source has none.
    `verifier` names an entry of `rftkit.tasks.base.VERIFIERS`; `meta` holds what the
    verifier needs beyond `answer` (e.g. countdown's numbers and target). `env` names an
    environment of `rftkit.envs.ENVS` (multi-turn: tool calls, games, simulated users; its
    knobs in `meta["env_args"]`); "" = one turn, the completion is the answer. `images`: the
    problem's images in order (a visual question, or the frames of a short clip); a model sees
    them before the prompt's text (rftkit/model/vision.py).
    """

    task: str
    prompt: str
    answer: str
    verifier: str
    difficulty: int = 0
    demo: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    env: str = ""
    images: tuple[Image, ...] = ()

    @property
    def key(self) -> str:
        """What makes two problems the same question: the prompt, and its images' keys if any
        (visual tasks ask "count=" of many images). Pools deduplicate and hold out by it."""
        if not self.images:
            return self.prompt
        return self.prompt + "\x00" + ",".join(f"{im.key:010x}" for im in self.images)


@dataclass(frozen=True)
class Verdict:
    """A verifier's judgement: score in [0, 1], the parsed answer (None if unparsable), why."""

    score: float
    parsed: str | None
    reason: str

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


@dataclass(frozen=True)
class Generation:
    """What a Generator returns for a list of prompts, each sampled n times.

    Row r = prompt r // n, sample r % n.
    Shapes: tokens [N, T] long (right-padded with pad id), logp [N, T] float (sampling
    policy's log-probs of the sampled tokens, 0 elsewhere), mask [N, T] float (1 on
    generated tokens, including the final eos), prompt_lens [N], truncated [N] bool
    (hit max_new_tokens without eos/stop), texts: decoded completions without eos.
    """

    tokens: Tensor
    logp: Tensor
    mask: Tensor
    prompt_lens: Tensor
    truncated: Tensor
    texts: list[str]


@dataclass
class Episode:
    """One multi-turn rollout row after its prompt (rftkit/envs/episodes.py).

    segments: (token ids, written by the model, text) in order: model turns (trained, mask 1)
    and observations (environment text, mask 0). answer: the last model turn's text, what the
    problem's verifier scores. turn_rewards: the environment's reward after each model turn.
    end: why it stopped: done | turn_limit | token_limit | context_limit | truncated |
    env_error | env_timeout. info: the environment's numeric info, summed over turns
    (tool_calls, tool_errors, ...). obs_truncated: observations cut to the token limit.
    """

    segments: list[tuple[list[int], bool, str]] = field(default_factory=list)
    answer: str = ""
    turn_rewards: list[float] = field(default_factory=list)
    end: str = "done"
    info: dict[str, float] = field(default_factory=dict)
    obs_truncated: int = 0

    @property
    def turns(self) -> int:
        return sum(1 for _, model, _ in self.segments if model)

    def transcript(self) -> str:
        return "".join(text for _, _, text in self.segments)


@dataclass(frozen=True)
class RolloutBatch:
    """On-policy samples of one step, scored and ready for the objectives.

    Shapes: tokens [N, T], mask [N, T], old_logp [N, T] (log-probs the rollout engine
    reported for the sampled tokens), group_ids [N] (which prompt), rewards [N] (verifier
    score plus sequence-level shaping), advantages [N, T] (0 where mask = 0), truncated [N]
    bool. Optional, when the stage needs them: ref_logp [N, T] (reference policy),
    values [N, T] (critic at rollout time), returns [N, T] (value targets), offpolicy [N]
    bool (demonstration rows inside a group), prefix_mask [N, T] (forced prefix tokens, not
    in `mask`), teacher_logp [N, T], step_mask [N, T] (1 at each reasoning step's last token,
    needs "step_labels" or "prm"), step_labels [N, T] (Math-Shepherd label at step ends).
    Multi-turn rows (problems with an `env`): episodes [N] (None for one-turn rows),
    turn_ends [N, T] (1 at each model turn's last token), turn_rewards [N, T] (the
    environment's reward after each turn, at that turn's last token); observation tokens
    are in `tokens` with mask 0. `problems`/`texts`/`verdicts` have length N; a row's text
    is what its verifier scored (a multi-turn row's last model turn).
    """

    tokens: Tensor
    mask: Tensor
    old_logp: Tensor
    group_ids: Tensor
    rewards: Tensor
    advantages: Tensor
    truncated: Tensor
    problems: list[Problem]
    texts: list[str]
    verdicts: list[Verdict]
    ref_logp: Tensor | None = None
    values: Tensor | None = None
    returns: Tensor | None = None
    offpolicy: Tensor | None = None
    prefix_mask: Tensor | None = None
    teacher_logp: Tensor | None = None
    step_mask: Tensor | None = None
    step_labels: Tensor | None = None
    episodes: list[Episode | None] | None = None
    turn_ends: Tensor | None = None
    turn_rewards: Tensor | None = None


@dataclass(frozen=True)
class PairBatch:
    """Preference pairs of one step: for pair i, [i, 0] is the chosen completion and [i, 1]
    the rejected one, each laid out like a demonstration (prompt, completion, eos).

    Shapes: tokens [P, 2, T], mask [P, 2, T] (1 on completion tokens, eos included),
    rewards [P, 2] (the scores that ranked the two: verifier or reward-model rewards for
    pairs built from rollouts, 1 / 0 for pairs read from a preference dataset).
    """

    tokens: Tensor
    mask: Tensor
    rewards: Tensor
    problems: list[Problem]


@dataclass(frozen=True)
class DemoBatch:
    """Demonstrations (off-policy targets) of one step. tokens [M, T], mask [M, T], weights [M]
    (a demonstration's weight, from its problem's meta["demo_weight"], default 1)."""

    tokens: Tensor
    mask: Tensor
    problems: list[Problem]
    weights: Tensor | None = None
