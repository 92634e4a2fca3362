"""One step of the loop, the whole of it, top to bottom (docs/architecture.md):

    prompts <- sampler.next(B)
    rollout (only when some part needs "rollout"):
        specs   <- layout(problem, G, progress)                 per prompt     (algos/layouts.py)
        rows    <- generate(specs); verify(rows)                               (rollout_rows.py)
        resample until satisfied: each resampler keeps, redoes or asks for more (algos/resample.py)
        batch   <- collate(kept groups)
        extras by needs: ref / teacher log-probs, critic values, greedy rewards
        rewards <- reward transforms, in order                                 (algos/shaping.py)
        adv, returns <- advantage(rewards, groups, mask)                       (algos/advantages.py)
    demos   <- demonstrations(prompts)     (only when some part needs "demos")
    pairs   <- pair source(prompts, batch) (only when some part needs "pairs": DPO, reward models)
    loss    <- sum_i weight_i(progress) * objective_i(inputs); optimizer step (update.py)
    sampler.update(per-prompt stats)

For GRPO: the advantage is `grpo_advantages` (algos/advantages.py), called in `_prepare` below
as `parts.advantage(...)`; the loss is the `policy` objective (algos/objectives.py, its
`ppo_clip` loss in algos/losses.py), summed in `update.update_policy`. Everything the step
runs with is a `Bound` part in `StepParts`, built once per stage by `train/build.py`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rftkit.algos.layouts import Group
from rftkit.algos.multiturn import episode_info
from rftkit.algos.resample import Decision, ResampleCtx
from rftkit.algos.shaping import RewardBatch
from rftkit.data.demos import DemoProvider
from rftkit.data.pairs import PairSource
from rftkit.data.samplers import PromptStats, Sampler
from rftkit.envs.episodes import EpisodeLimits
from rftkit.model.logprobs import frozen_logprobs
from rftkit.registry import Bound
from rftkit.rollout.base import Generator, SamplingParams
from rftkit.train.batches import demo_batch, pair_batch
from rftkit.train.controllers import WeightController
from rftkit.train.prm_labels import LoadedPrm, process_data
from rftkit.train.rollout_rows import (
    add_reward_metrics,
    collate,
    demo_row,
    generate,
    greedy_rewards,
    prompt_stats,
    rollout_metrics,
    score,
)
from rftkit.train.update import UpdateState, update_policy
from rftkit.types import PairBatch, Problem, RolloutBatch


@dataclass
class Term:
    """One objective of the stage: the bound objective and its weight schedule."""

    name: str
    fn: Bound
    weight: Callable[[float], float]


@dataclass
class StepParts:
    model: torch.nn.Module
    ref_model: torch.nn.Module | None
    critic: torch.nn.Module | None
    scorer: torch.nn.Module | None  # a reward model in training (objectives needing "scores")
    teacher: torch.nn.Module | None
    tok: object
    generator: Generator
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    pool: list[Problem]
    terms: list[Term]
    needs: frozenset[str]
    layout: Bound
    resamplers: list[Bound]
    transforms: list[Bound]
    advantage: Bound
    demo_provider: DemoProvider
    pair_source: PairSource
    controller: WeightController | None
    rewards: object | None  # rftkit.rewards.RewardRunner, or None: each problem's verifier inline
    sampling: SamplingParams
    batch_size: int
    update_epochs: int
    minibatches: int
    grad_accum: int
    grad_clip: float
    skip_inert_rows: bool
    ref_reset_every: int
    lr_at: Callable[[int], float]
    prm: LoadedPrm | None = None  # a trained process reward model (parts needing "prm"; stage key `prm`)
    episode_limits: EpisodeLimits = field(default_factory=EpisodeLimits)  # multi-turn budgets (rollout.episode)
    learners: object | None = None  # a dist.learners group (dist/learner_group.py): updates run there


def run_step(parts: StepParts, state: UpdateState, step: int, progress: float, seed: int,
             prefetch: tuple | None = None) -> dict:
    """One full step; returns its flat metrics. `step` is the global step (for LR and seeds).
    `prefetch`: (Prefetcher, stage step) when rollouts run ahead (dist/async_rollout.py)."""
    metrics: dict[str, float] = {}
    batch = demos = pairs = None
    stats: list[PromptStats] = []
    if prefetch is not None:
        pre, s = prefetch
        batch, m, stats, indices = pre.take(s, state)
        pre.fill(s, state)  # the next steps generate while this one trains
        metrics.update(m)
    else:
        indices = parts.sampler.next(parts.batch_size)
    if "rollout" in parts.needs and prefetch is None:
        batch, m, stats = rollout(parts, indices, seed, state, progress)
        metrics.update(m)
    if "demos" in parts.needs:
        rng = random.Random(f"{seed}/demos")
        max_len = getattr(getattr(parts.model, "cfg", None), "max_seq_len", 10**9)
        found, m = parts.demo_provider([parts.pool[i] for i in indices], batch, rng)
        demos = demo_batch(parts.tok, found, max_len)
        metrics.update(m)
        metrics["data/demos"] = float(len(found))
    if "pairs" in parts.needs:
        pairs, m = _pairs(parts, indices, batch, seed)
        metrics.update(m)
    weights = {t.name: t.weight(progress) for t in parts.terms}
    if parts.controller is not None:
        weights, m = parts.controller.weights(weights, random.Random(f"{seed}/controller"))
        metrics.update(m)
    metrics.update({f"weight/{k}": v for k, v in weights.items()})
    metrics["optim/lr"] = _set_lr(parts, step)
    t0 = time.perf_counter()
    if parts.learners is not None and (batch is not None or demos is not None or pairs is not None):
        metrics.update(parts.learners.update(state, batch, demos, weights, seed, pairs, metrics["optim/lr"]))
    elif batch is not None or demos is not None or pairs is not None:
        metrics.update(update_policy(parts, state, batch, demos, weights, seed, pairs))
    metrics["time/update"] = time.perf_counter() - t0
    metrics.update(parts.sampler.update(stats))
    if parts.controller is not None:
        parts.controller.observe(metrics)
    return metrics


def _pairs(parts: StepParts, indices: list[int], batch: RolloutBatch | None,
           seed: int) -> tuple[PairBatch | None, dict]:
    found, metrics = parts.pair_source([parts.pool[i] for i in indices], batch, random.Random(f"{seed}/pairs"))
    max_len = getattr(getattr(parts.model, "cfg", None), "max_seq_len", 10**9)
    metrics["data/pairs"] = float(len(found))
    return pair_batch(parts.tok, found, batch, max_len), metrics


def _set_lr(parts: StepParts, step: int) -> float:
    lr = parts.lr_at(step)
    for g in parts.optimizer.param_groups:  # a critic group carries its own scale
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr


def rollout(parts: StepParts, indices: list[int], seed: int, state: UpdateState,
            progress: float = 0.0) -> tuple[RolloutBatch | None, dict, list[PromptStats]]:
    """Sample, verify, resample, collate and prepare one batch; None when every group was dropped."""
    t0 = time.perf_counter()
    kept, sampled, metrics = sample_groups(parts, indices, seed, progress)
    t1 = time.perf_counter()
    if not kept:
        metrics.update({"time/rollout": t1 - t0, "rollout/empty_batch": 1.0})
        return None, metrics, prompt_stats(sampled, None)
    m = collate(kept, parts.tok.pad_id)
    batch = _prepare(parts, m, seed, state, metrics)
    metrics.update(rollout_metrics(batch, m))
    metrics.update({"time/rollout": t1 - t0, "time/reward": time.perf_counter() - t1,
                    "perf/tokens_per_s": metrics["perf/gen_tokens"] / max(t1 - t0, 1e-9)})
    return batch, metrics, prompt_stats(sampled, batch)


def sample_groups(parts: StepParts, indices: list[int], seed: int,
                  progress: float) -> tuple[list[Group], list[Group], dict]:
    """Rounds of sampling until the resamplers are satisfied; returns (kept, all sampled, metrics).
    Round r draws fresh prompts (after the first) with seed + 7919 r."""
    kept: list[Group] = []
    sampled: list[Group] = []
    metrics: dict[str, float] = {}
    filtered, rnd = False, 0
    while True:
        _bounded(rnd, "rounds of fresh prompts", parts.resamplers)
        round_seed = seed + 7919 * rnd
        groups = sample_round(parts, indices if rnd == 0 else parts.sampler.next(parts.batch_size),
                              round_seed, progress, metrics)
        keep, more = [True] * len(groups), False
        for resampler in parts.resamplers:
            decision = _resample(parts, resampler, groups, round_seed, rnd, len(kept), metrics)
            if decision.keep is not None:
                keep, filtered = [a and b for a, b in zip(keep, decision.keep, strict=True)], True
            more |= decision.more
        sampled += groups
        kept += [g for g, k in zip(groups, keep, strict=True) if k]
        rnd += 1
        if not more:
            break
    if filtered:
        metrics.update({"rollout/refill_rounds": float(rnd - 1),
                        "rollout/kept_groups": float(min(len(kept), parts.batch_size))})
        kept = kept[: parts.batch_size]
    return kept, sampled, metrics


def sample_round(parts: StepParts, indices: list[int], seed: int, progress: float, metrics: dict) -> list[Group]:
    """One group per prompt as its layout says: samples generated in one engine call (in spec
    order), demonstration rows appended; every row verified."""
    g = parts.sampling.n
    layouts = [parts.layout(parts.pool[i], g, progress) for i in indices]
    specs = [(parts.pool[i], s) for i, lay in zip(indices, layouts, strict=True) for s in lay if not s.demo]
    rows = iter(generate(parts, specs, seed))
    groups = [Group(i, [next(rows) if not s.demo else demo_row(parts, parts.pool[i]) for s in lay])
              for i, lay in zip(indices, layouts, strict=True)]
    add_reward_metrics(metrics, score(parts, [r for gr in groups for r in gr.rows]))
    return groups


def _resample(parts: StepParts, resampler: Bound, groups: list[Group], round_seed: int, rnd: int,
              n_kept: int, metrics: dict) -> Decision:
    """Call one resampler on a round's groups, regenerating the groups it redoes (seed +
    101 (attempt + 1)) and calling it again, until it redoes nothing."""
    attempt = 0
    while True:
        _bounded(attempt, "redo attempts", [resampler])
        ctx = ResampleCtx(rnd, attempt, n_kept, parts.batch_size, parts.pool.__getitem__)
        decision = resampler(groups, ctx)
        metrics.update(decision.metrics)
        if not decision.redo:
            return decision
        redo = sorted(decision.redo)
        specs = [(parts.pool[groups[i].index], s) for i in redo for s in decision.redo[i]]
        rows = generate(parts, specs, round_seed + 101 * (attempt + 1))
        add_reward_metrics(metrics, score(parts, rows))
        it = iter(rows)
        for i in redo:
            groups[i].rows = [next(it) for _ in decision.redo[i]]
        attempt += 1


MAX_RESAMPLE = 64
"""More rounds or redo attempts than this in one step is a resampler that never settles."""


def _bounded(count: int, what: str, resamplers: list[Bound]) -> None:
    if count >= MAX_RESAMPLE:
        names = ", ".join(r.name for r in resamplers)
        raise RuntimeError(f"resampler(s) {names} asked for more than {MAX_RESAMPLE} {what} in one step; a "
                           f"resampler must stop asking (bound its rounds or attempts with a knob)")


def _prepare(parts: StepParts, m: dict, seed: int, state: UpdateState, metrics: dict) -> RolloutBatch:
    """Extras by needs, reward transforms, then the advantage (and value targets)."""
    mask, temp, group_ids = m["mask"], parts.sampling.temperature, m["group_ids"]
    trained = torch.maximum(mask, m["prefix"])  # tokens any objective may read
    # the reference may be here for pairs or demos only (DPO, ASFT) or to sample (rollout.policy: reference)
    use_ref = parts.ref_model is not None and "ref" in parts.needs
    ref_logp = frozen_logprobs(parts.ref_model, m["tokens"], trained, temp) if use_ref else None
    teacher = frozen_logprobs(parts.teacher, m["tokens"], trained, temp) if parts.teacher is not None else None
    values = greedy = None
    if parts.critic is not None:
        with torch.no_grad():
            values = parts.critic(m["tokens"]) * mask
    if "greedy" in parts.advantage.needs:
        greedy = greedy_rewards(parts, m["problems"], group_ids, seed + 1)
    steps = process_data(parts, m, seed, metrics)  # step ends, PRM labels / scores (train/prm_labels.py)
    step_mask = steps.step_mask if steps is not None else None
    rewards, seq_rewards = m["rewards"], m["rewards"]
    info = episode_info(m.get("episodes"))  # per-row env info (tool_calls, call_score, ...) for tool rewards
    for transform in parts.transforms:
        rb = RewardBatch(mask, m["mask"].sum(1), m["truncated"], m["offpolicy"], m["logp"], ref_logp,
                         parts.sampling.max_new_tokens, state.kl_coef, parts.batch_size * parts.sampling.n,
                         step_mask, steps.scores if steps is not None else None,
                         m.get("turn_ends"), m.get("turn_rewards"), info)
        shaped = transform(rewards, rb)
        rewards, mask = shaped.rewards, shaped.mask
        seq_rewards = rewards if rewards.dim() == 1 else seq_rewards
        metrics.update(shaped.metrics)
        if shaped.kl_coef is not None:
            state.kl_coef = shaped.kl_coef
    if values is not None:
        values = values * mask
    extra = {"step_mask": step_mask} if "prm" in parts.advantage.needs else {}  # grpo_process
    if parts.advantage.marks.get("turn_ends"):  # turn_grpo, turn_gae: None for a batch without episodes
        extra["turn_ends"] = m.get("turn_ends")
    adv, returns = parts.advantage(rewards, group_ids, mask, values=values, greedy_rewards=greedy, **extra)
    has_prefix, has_off = bool(m["prefix"].any()), bool(m["offpolicy"].any())
    return RolloutBatch(tokens=m["tokens"], mask=mask, old_logp=m["logp"], group_ids=group_ids,
                        rewards=seq_rewards, advantages=adv * mask, truncated=m["truncated"],
                        problems=m["problems"], texts=m["texts"], verdicts=m["verdicts"],
                        ref_logp=ref_logp, values=values, returns=returns,
                        offpolicy=m["offpolicy"] if has_off else None,
                        prefix_mask=m["prefix"] if has_prefix else None, teacher_logp=teacher,
                        step_mask=step_mask, step_labels=steps.labels if steps is not None else None,
                        episodes=m.get("episodes"), turn_ends=m.get("turn_ends"), turn_rewards=m.get("turn_rewards"))
