"""The rollout half of an RL step: sample, verify, shape rewards, filter groups, advantages.

    sample groups -> verify -> DAPO overlong punishment -> zero-variance policy (keep | drop |
    refill: over-sample until the batch is full, DAPO dynamic sampling) -> greedy baseline
    (ReMax) / reference log-probs / critic values, when needed -> KL-in-reward -> advantages

Everything a later objective needs is computed here once, for the whole batch, before the
update splits it into minibatches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from rftkit.algos.advantages import gae_returns, group_stats
from rftkit.algos.shaping import dapo_overlong_penalty, kl_in_reward, zero_variance_groups
from rftkit.data.samplers import PromptStats
from rftkit.rollout.base import SamplingParams
from rftkit.tasks.base import verify
from rftkit.train.batches import pad, token_logprobs
from rftkit.types import Problem, RolloutBatch


@dataclass(frozen=True)
class RLOptions:
    """Plain copy of config.RLCfg (parts never read config objects)."""

    zero_variance: str = "keep"
    max_refill_rounds: int = 4
    overlong_cache: int = 0
    mask_truncated: bool = False
    kl_reward_coef: float = 0.0
    kl_reward_estimator: str = "k1"
    kl_target: float | None = None
    kl_horizon: int = 10000
    ref_reset_every: int = 0
    critic_lr: float = 1e-4


@dataclass
class Round:
    """One sampling round: rows grouped by prompt (row r belongs to prompt r // G)."""

    indices: list[int]
    problems: list[Problem]
    rows: dict  # tokens, logp, mask, truncated: per-row lists/tensors
    texts: list[str]
    verdicts: list
    rewards: Tensor


def _sample_round(parts, indices: list[int], seed: int) -> Round:
    problems = [parts.pool[i] for i in indices]
    prompts = [[parts.tok.bos_id] + parts.tok.encode(p.prompt) for p in problems]
    sampling = SamplingParams(**{**parts.sampling.__dict__, "seed": seed})
    gen = parts.generator.generate(prompts, sampling)
    g = sampling.n
    expanded = [p for p in problems for _ in range(g)]
    verdicts = [verify(p, t) for p, t in zip(expanded, gen.texts)]
    rewards = torch.tensor([v.score for v in verdicts], dtype=torch.float32)
    opts: RLOptions = parts.rl
    if opts.overlong_cache > 0:
        rewards = rewards + dapo_overlong_penalty(gen.mask.sum(1), sampling.max_new_tokens, opts.overlong_cache)
    rows = {"tokens": gen.tokens, "logp": gen.logp, "mask": gen.mask, "truncated": gen.truncated}
    return Round(indices, expanded, rows, gen.texts, verdicts, rewards)


def _keep_groups(rnd: Round, g: int) -> list[int]:
    """Prompt positions (within the round) whose group has reward variance."""
    ids = torch.arange(len(rnd.indices)).repeat_interleave(g)
    flat = zero_variance_groups(rnd.rewards, ids).view(len(rnd.indices), g)[:, 0]
    return [i for i, z in enumerate(flat.tolist()) if not z]


def sample_groups(parts, indices: list[int], seed: int) -> tuple[list[tuple[Round, int]], list[Round], dict]:
    """Rounds of sampling under the zero-variance policy; returns the kept (round, prompt) pairs."""
    g, opts = parts.sampling.n, parts.rl
    rounds = [_sample_round(parts, indices, seed)]
    if opts.zero_variance == "keep":
        return [(rounds[0], i) for i in range(len(indices))], rounds, {}
    kept = [(rounds[0], i) for i in _keep_groups(rounds[0], g)]
    zero_frac = 1 - len(kept) / len(indices)
    while opts.zero_variance == "refill" and len(kept) < parts.batch_size and len(rounds) <= opts.max_refill_rounds:
        more = parts.sampler.next(parts.batch_size)
        rounds.append(_sample_round(parts, more, seed + 7919 * len(rounds)))
        kept += [(rounds[-1], i) for i in _keep_groups(rounds[-1], g)]
    kept = kept[: parts.batch_size]
    return kept, rounds, {"adv/zero_std_frac_sampled": zero_frac, "rollout/refill_rounds": float(len(rounds) - 1),
                          "rollout/kept_groups": float(len(kept))}


def _merge(kept: list[tuple[Round, int]], g: int, pad_id: int) -> dict:
    rows: dict[str, list] = {"tokens": [], "logp": [], "mask": [], "truncated": [], "problems": [],
                             "texts": [], "verdicts": [], "rewards": []}
    for rnd, i in kept:
        for r in range(i * g, (i + 1) * g):
            n = int(rnd.rows["mask"][r].nonzero().max()) + 1 if rnd.rows["mask"][r].any() else 1
            rows["tokens"].append(rnd.rows["tokens"][r, :n].tolist())
            rows["logp"].append(rnd.rows["logp"][r, :n].tolist())
            rows["mask"].append(rnd.rows["mask"][r, :n].tolist())
            rows["truncated"].append(bool(rnd.rows["truncated"][r]))
            rows["problems"].append(rnd.problems[r])
            rows["texts"].append(rnd.texts[r])
            rows["verdicts"].append(rnd.verdicts[r])
            rows["rewards"].append(float(rnd.rewards[r]))
    return {"tokens": pad(rows["tokens"], pad_id, torch.long), "logp": pad(rows["logp"], 0.0, torch.float32),
            "mask": pad(rows["mask"], 0.0, torch.float32), "truncated": torch.tensor(rows["truncated"]),
            "problems": rows["problems"], "texts": rows["texts"], "verdicts": rows["verdicts"],
            "rewards": torch.tensor(rows["rewards"], dtype=torch.float32)}


@torch.no_grad()
def _greedy_rewards(parts, problems: list[Problem], g: int, seed: int) -> Tensor:
    """ReMax baseline: the reward of each prompt's greedy completion, repeated per row."""
    uniq = problems[::g]
    prompts = [[parts.tok.bos_id] + parts.tok.encode(p.prompt) for p in uniq]
    params = SamplingParams(n=1, max_new_tokens=parts.sampling.max_new_tokens, temperature=0.0,
                            stop=parts.sampling.stop, seed=seed)
    gen = parts.generator.generate(prompts, params)
    r = torch.tensor([verify(p, t).score for p, t in zip(uniq, gen.texts)], dtype=torch.float32)
    return r.repeat_interleave(g)


def rollout(parts, indices: list[int], seed: int, kl_coef: float) -> tuple[RolloutBatch | None, dict, list[PromptStats]]:
    """Sample, score and prepare one batch; None when every group was dropped."""
    t0 = time.perf_counter()
    g = parts.sampling.n
    kept, rounds, metrics = sample_groups(parts, indices, seed)
    t1 = time.perf_counter()
    stats_rounds = rounds
    if not kept:
        metrics.update({"time/rollout": t1 - t0, "rollout/empty_batch": 1.0})
        return None, metrics, _prompt_stats(stats_rounds, g, None)
    m = _merge(kept, g, parts.tok.pad_id)
    batch = _finish(parts, m, g, seed, kl_coef, metrics)
    metrics.update(_rollout_metrics(batch, m, g))
    metrics.update({"time/rollout": t1 - t0, "time/reward": time.perf_counter() - t1})
    return batch, metrics, _prompt_stats(stats_rounds, g, batch)


def _finish(parts, m: dict, g: int, seed: int, kl_coef: float, metrics: dict) -> RolloutBatch:
    mask = m["mask"] * (~m["truncated"]).float()[:, None] if parts.rl.mask_truncated else m["mask"]
    group_ids = torch.arange(len(m["problems"]) // g).repeat_interleave(g)
    temp = parts.sampling.temperature
    ref_logp = values = returns = greedy = None
    if parts.ref_model is not None:
        with torch.no_grad():
            ref_logp = token_logprobs(parts.ref_model, m["tokens"], temp)[0] * mask
    if parts.critic is not None:
        with torch.no_grad():
            values = parts.critic(m["tokens"]) * mask
    if "greedy" in parts.advantage_fn.needs:
        greedy = _greedy_rewards(parts, m["problems"], g, seed + 1)
    rewards: Tensor = m["rewards"]
    if parts.rl.kl_reward_coef > 0:
        rewards = kl_in_reward(rewards, m["logp"], ref_logp, mask, kl_coef, parts.rl.kl_reward_estimator)
        kl = ((m["logp"] - ref_logp) * mask).sum() / mask.sum().clamp(min=1)
        metrics.update({"policy/kl_reward": float(kl), "policy/kl_coef": kl_coef})
    adv = parts.advantage_fn(rewards, group_ids, mask, values=values, greedy_rewards=greedy)
    if values is not None:
        returns = gae_returns(rewards, mask, values, **_gae_knobs(parts.advantage_fn))
    return RolloutBatch(tokens=m["tokens"], mask=mask, old_logp=m["logp"], group_ids=group_ids,
                        rewards=m["rewards"], advantages=adv * mask, truncated=m["truncated"],
                        problems=m["problems"], texts=m["texts"], verdicts=m["verdicts"],
                        ref_logp=ref_logp, values=values, returns=returns)


def _gae_knobs(fn) -> dict:
    kw = getattr(fn, "keywords", {}) or {}
    return {k: kw[k] for k in ("gamma", "lam") if k in kw}


def _rollout_metrics(batch: RolloutBatch, m: dict, g: int) -> dict[str, float]:
    rewards, lengths = batch.rewards, m["mask"].sum(1)
    grouped = rewards.view(-1, g)
    return {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "reward/acc": sum(v.correct for v in batch.verdicts) / len(batch.verdicts),
        "rollout/len_mean": float(lengths.mean()), "rollout/truncated_frac": float(batch.truncated.float().mean()),
        "adv/zero_std_frac": float((grouped.std(1) == 0).float().mean()) if g > 1 else 1.0,
        "adv/abs_mean": float(batch.advantages.abs().sum() / batch.mask.sum().clamp(min=1)),
        "perf/gen_tokens": float(lengths.sum()),
    }


def _prompt_stats(rounds: list[Round], g: int, batch: RolloutBatch | None) -> list[PromptStats]:
    """Per sampled prompt: pass rate, reward std, mean |advantage| (0 for dropped groups)."""
    adv_by_problem: dict[int, float] = {}
    if batch is not None:
        per_row = (batch.advantages.abs().sum(1) / batch.mask.sum(1).clamp(min=1)).view(-1, g).mean(1)
        for k, v in enumerate(per_row.tolist()):
            adv_by_problem[id(batch.problems[k * g])] = v
    out = []
    for rnd in rounds:
        r = rnd.rewards.view(len(rnd.indices), g)
        std = r.std(1) if g > 1 else torch.zeros(len(rnd.indices))
        for j, idx in enumerate(rnd.indices):
            p = rnd.problems[j * g]
            out.append(PromptStats(index=idx, task=p.task, source=p.source or p.task, difficulty=p.difficulty,
                                   reward_mean=float(r[j].mean()), reward_std=float(std[j]),
                                   adv_abs_mean=adv_by_problem.get(id(p), 0.0)))
    return out


__all__ = ["RLOptions", "rollout", "sample_groups", "group_stats"]
