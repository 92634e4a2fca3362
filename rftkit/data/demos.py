"""Demonstration providers: which completions the SFT-like objectives of a step imitate.

    provider(problems, batch, rng) -> (list of (problem, completion), metrics)

`problems` are the step's prompts; `batch` is the step's scored rollouts (None when the stage
has none). A provider that reads rollouts registers with `needs={"rollout"}`, so a stage whose
only objective is SFT still samples (RAFT). Stateful providers (ReLIFT's buffer) keep their
state as JSON through checkpoints. Each is registered by name; knobs are keyword-only.

    task          the task's own solution trace for every prompt (plain SFT, ReFT's warm-up)
    noisy         task demos with the answer corrupted at a rate (the built-in base model)
    relift        ReLIFT: all-fail prompts join a buffer; every `size` of them, one SFT batch
    self_correct  RAFT / ReST / expert iteration: the policy's own verified-correct samples
    s3ft          S3FT: the policy's own correct sample when it has one, else the gold demo
    metis         Metis-RISE targeted SFT: gold demos where the policy always fails, its own
                  correct samples where it sometimes succeeds
    top_reward    SuperHF / RAFT with a reward model: each group's best sample by reward
    crlft         C-RLFT: mixed expert / sub-optimal demos, the class in the prompt and its
                  reward as the demonstration's weight
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Protocol

from rftkit.algos.groups import group_rows
from rftkit.registry import Registry
from rftkit.tasks.base import corrupt_answer
from rftkit.types import Episode, Problem, RolloutBatch

Pairs = list[tuple[Problem, str | Episode]]  # a multi-turn demonstration is an Episode


class DemoProvider(Protocol):
    def __call__(self, problems: list[Problem], batch: RolloutBatch | None,
                 rng: random.Random) -> tuple[Pairs, dict[str, float]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


DEMO_SOURCES: Registry[type] = Registry("demonstration source")


class _Stateless:
    def __init__(self, pool: list[Problem]) -> None:
        self.index = {p.key: i for i, p in enumerate(pool)}
        self.pool = pool

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def groups(batch: RolloutBatch) -> list[list[int]]:
    """Row indices of each group, groups in the order they appear."""
    return list(group_rows(batch.group_ids).values())


@DEMO_SOURCES.register("task")
class TaskDemos(_Stateless):
    """The task's demonstration for every prompt that has one (supervised fine-tuning)."""

    def __call__(self, problems, batch, rng):
        return [(p, p.demo) for p in problems if p.demo is not None], {}


@DEMO_SOURCES.register("noisy")
class NoisyDemos(_Stateless):
    """Task demos whose answer is corrupted (one character) with probability corrupt_prob.

    Builds the partly competent "base model" of the built-in testbed: the mixture of correct
    and corrupted traces sets how often the base samples a right answer.
    """

    def __init__(self, pool: list[Problem], *, corrupt_prob: float = 0.5) -> None:
        super().__init__(pool)
        self.corrupt_prob = corrupt_prob

    def __call__(self, problems, batch, rng):
        out = []
        for p in problems:
            if p.demo is not None:
                out.append(_corrupted(p, rng) if rng.random() < self.corrupt_prob else (p, p.demo))
        return out, {}


def _corrupted(p: Problem, rng: random.Random) -> tuple[Problem, str]:
    """A demo with its answer corrupted; a multi-turn demo's last turn is (its segments follow,
    so its observations stay untrained)."""
    segments = p.meta.get("demo_segments")
    if not segments:
        return p, corrupt_answer(p.demo, rng)
    *head, (last, trained) = segments
    segments = [*head, [corrupt_answer(last, rng), trained]]
    return replace(p, meta={**p.meta, "demo_segments": segments}), "".join(t for t, _ in segments)


@DEMO_SOURCES.register("relift", needs={"rollout"})
class ReLIFTBuffer(_Stateless):
    """ReLIFT (Ma et al. 2025, "Learning What Reinforcement Learning Can't", arXiv:2506.07527).

    A prompt whose whole group fails (no rollout correct) joins a buffer with its
    demonstration; whenever the buffer holds `size` prompts they are returned (and removed)
    for one SFT update interleaved with RL. Metrics: mix/buffer_size, mix/sft_triggered,
    mix/demos_used (cumulative demonstrations consumed).
    """


    def __init__(self, pool: list[Problem], *, size: int = 16) -> None:
        super().__init__(pool)
        self.size, self.buffer, self.used = size, [], 0

    def __call__(self, problems, batch, rng):
        for rows in groups(batch) if batch is not None else []:
            p = batch.problems[rows[0]]
            if p.demo is not None and all(not batch.verdicts[r].correct for r in rows):
                self.buffer.append(self.index[p.key])
        out: Pairs = []
        if len(self.buffer) >= self.size:
            take, self.buffer = self.buffer[: self.size], self.buffer[self.size :]
            out = [(self.pool[i], self.pool[i].demo) for i in take]
            self.used += len(out)
        return out, {"mix/buffer_size": float(len(self.buffer)), "mix/sft_triggered": float(bool(out)),
                     "mix/demos_used": float(self.used)}

    def state_dict(self):
        return {"buffer": list(self.buffer), "used": self.used}

    def load_state_dict(self, state):
        self.buffer, self.used = list(state["buffer"]), int(state["used"])


@DEMO_SOURCES.register("self_correct", needs={"rollout"})
class SelfCorrect(_Stateless):
    """Rejection-sampling fine-tuning: RAFT (arXiv:2304.06767), ReST-EM (arXiv:2312.06585),
    expert iteration. The step's verified-correct on-policy samples, up to `per_prompt` per
    prompt, become the SFT targets. Metric: mix/self_demos."""


    def __init__(self, pool: list[Problem], *, per_prompt: int = 1) -> None:
        super().__init__(pool)
        self.per_prompt = per_prompt

    def __call__(self, problems, batch, rng):
        out: Pairs = []
        for rows in groups(batch) if batch is not None else []:
            good = [r for r in rows if batch.verdicts[r].correct and not _off(batch, r)]
            out += [(batch.problems[r], batch.texts[r]) for r in good[: self.per_prompt]]
        return out, {"mix/self_demos": float(len(out))}


@DEMO_SOURCES.register("s3ft", needs={"rollout"})
class S3FTDemos(_Stateless):
    """S3FT (Gupta et al. 2024, "Selective Self-to-Supervised Fine-Tuning", arXiv:2502.08130):
    per prompt, the model's own correct response when it has one, otherwise the gold one.
    Metric: mix/own_fraction."""


    def __call__(self, problems, batch, rng):
        out: Pairs = []
        own = 0
        for rows in groups(batch) if batch is not None else []:
            good = [r for r in rows if batch.verdicts[r].correct and not _off(batch, r)]
            p = batch.problems[rows[0]]
            if good:
                out.append((p, batch.texts[good[0]]))
                own += 1
            elif p.demo is not None:
                out.append((p, p.demo))
        return out, {"mix/own_fraction": own / max(1, len(out))}


@DEMO_SOURCES.register("metis", needs={"rollout"})
class MetisDemos(_Stateless):
    """Metis-RISE's targeted SFT (Qiu et al. 2025, arXiv:2506.13056): prompts bucketed by the
    group pass rate r of the current policy. r = 0 (capability absent): the expert (gold)
    demonstration; 0 < r < skip_above (possessed but applied inconsistently): one of the
    model's own correct samples (self-distilled trajectory) if `self_distill`, else the gold
    one; r >= skip_above: no target. Metrics: mix/expert_fraction, mix/self_fraction."""


    def __init__(self, pool: list[Problem], *, skip_above: float = 1.0, self_distill: bool = True) -> None:
        super().__init__(pool)
        self.skip_above, self.self_distill = skip_above, self_distill

    def __call__(self, problems, batch, rng):
        out: Pairs = []
        expert = own = 0
        all_groups = groups(batch) if batch is not None else []
        for rows in all_groups:
            p = batch.problems[rows[0]]
            good = [r for r in rows if batch.verdicts[r].correct and not _off(batch, r)]
            rate = len(good) / len(rows)
            if rate >= self.skip_above:
                continue
            if good and self.self_distill:
                out.append((p, batch.texts[good[0]]))
                own += 1
            elif p.demo is not None:
                out.append((p, p.demo))
                expert += 1
        n = max(1, len(all_groups))
        return out, {"mix/expert_fraction": expert / n, "mix/self_fraction": own / n}


@DEMO_SOURCES.register("top_reward", needs={"rollout"})
class TopReward(_Stateless):
    """The best sample of each group by reward (a reward model's score, or the verifier's),
    when it reaches `min_reward`: the filtering step of SuperHF (Mukobi et al. 2023,
    arXiv:2310.16763, top-1 of the prompt's samples) and RAFT with a reward model
    (arXiv:2304.06767); on multi-turn rows, the self-imitation of successful trajectories of
    SPEAR (the row's Episode, observations untrained). Ties go to the first row. Metric:
    mix/self_demos."""

    def __init__(self, pool: list[Problem], *, min_reward: float | None = None) -> None:
        super().__init__(pool)
        self.min_reward = min_reward

    def __call__(self, problems, batch, rng):
        out: Pairs = []
        rewards = batch.rewards.tolist() if batch is not None else []
        for rows in groups(batch) if batch is not None else []:
            rows = [r for r in rows if not _off(batch, r)]
            if not rows:
                continue
            best = max(rows, key=lambda r: (rewards[r], -r))
            if self.min_reward is None or rewards[best] >= self.min_reward:
                # a multi-turn row is imitated as sampled, observations untrained (SPEAR's self-imitation)
                episode = batch.episodes[best] if batch.episodes is not None else None
                out.append((batch.problems[best], episode if episode is not None else batch.texts[best]))
        return out, {"mix/self_demos": float(len(out))}


@DEMO_SOURCES.register("crlft")
class CRLFTDemos(_Stateless):
    """C-RLFT's mixed-quality data (OpenChat, arXiv:2309.11235): each prompt's demonstration is
    expert (the task's own, with probability `expert_share`) or sub-optimal (its answer
    corrupted, as the `noisy` source does). The class conditions the policy through the prompt:
    a sub-optimal demonstration's prompt starts with `suboptimal_tag`, an expert one's is the
    plain prompt, so evaluation (plain prompts) conditions on the expert class. Each carries
    its class reward as meta["demo_weight"] (1 expert, `suboptimal_weight` otherwise), which the
    `crlft` objective reads. Metric: mix/expert_fraction."""

    def __init__(self, pool: list[Problem], *, expert_share: float = 0.2, suboptimal_weight: float = 0.1,
                 suboptimal_tag: str = "~") -> None:
        super().__init__(pool)
        if not 0.0 <= expert_share <= 1.0 or suboptimal_weight < 0 or not suboptimal_tag:
            raise ValueError("crlft: expert_share in [0, 1], suboptimal_weight >= 0 and a non-empty suboptimal_tag")
        self.share, self.weight, self.tag = expert_share, suboptimal_weight, suboptimal_tag

    def __call__(self, problems, batch, rng):
        out: Pairs = []
        expert = 0
        for p in problems:
            if p.demo is None:
                continue
            if rng.random() < self.share:
                out.append((replace(p, meta={**p.meta, "demo_weight": 1.0}), p.demo))
                expert += 1
            else:
                out.append((self._tagged(p), corrupt_answer(p.demo, rng)))
        return out, {"mix/expert_fraction": expert / max(1, len(out))}

    def _tagged(self, p: Problem) -> Problem:
        """The sub-optimal class: the tag before the prompt (before the last user turn's text for a
        chat problem, whose messages are what the model reads)."""
        meta = {**p.meta, "demo_weight": self.weight}
        if meta.get("messages"):
            *head, last = meta["messages"]
            meta["messages"] = [*head, {**last, "content": self.tag + last["content"]}]
        return replace(p, prompt=self.tag + p.prompt, meta=meta)


def _off(batch: RolloutBatch, row: int) -> bool:
    return batch.offpolicy is not None and bool(batch.offpolicy[row])
