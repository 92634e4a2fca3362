"""The rollout half of an RL step: sample, verify, shape rewards, filter groups, advantages.

    rows per prompt: G on-policy samples, of which `prefix_rows` continue from a demonstration
        prefix (Prefix-RFT), and `offpolicy_per_group` demonstrations in place of samples (LUFFY)
    verify -> DAPO overlong punishment -> GHPO hints for groups that all failed ->
    zero-variance policy (keep | drop | refill: DAPO dynamic sampling) ->
    reference / teacher log-probs, critic values, greedy baseline (ReMax), when needed ->
    KL-in-reward -> advantages

Everything a later objective needs is computed here once, for the whole batch, before the
update splits it into minibatches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.model.logprobs import frozen_logprobs
from rftkit.algos.advantages import gae_returns
from rftkit.algos.shaping import dapo_overlong_penalty, kl_in_reward
from rftkit.data.samplers import PromptStats
from rftkit.rollout.base import SamplingParams
from rftkit.tasks.base import verify
from rftkit.train.batches import pad
from rftkit.types import Problem, RolloutBatch, Verdict


@dataclass(frozen=True)
class RLOptions:
    """Plain copy of config.RLCfg (parts never read config objects); prefix_ratio is a callable."""

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
    offpolicy_per_group: int = 0
    prefix_rows: int = 0
    prefix_ratio: object = 0.5
    hint_levels: tuple[float, ...] = ()
    skip_inert_rows: bool = True


@dataclass
class Row:
    """One completion in the layout of rftkit.types (token lists, not yet padded)."""

    problem: Problem
    tokens: list[int]
    logp: list[float]
    mask: list[float]
    prefix: list[float]
    text: str
    truncated: bool
    offpolicy: bool = False
    verdict: Verdict | None = None
    reward: float = 0.0


@dataclass
class Group:
    index: int  # pool index of the prompt
    rows: list[Row] = field(default_factory=list)

    def rewards(self) -> list[float]:
        return [r.reward for r in self.rows]


def demo_prefix(demo: str, ratio: float) -> str:
    """The first round(ratio * len) characters of a demonstration, leaving at least one."""
    n = min(max(0, round(ratio * len(demo))), len(demo) - 1)
    return demo[:n]


def _generate(parts, specs: list[tuple[Problem, str, bool]], seed: int) -> list[Row]:
    """Sample one completion per (problem, forced prefix, prefix-is-hint) spec."""
    tok = parts.tok
    cache: dict[tuple[int, str], tuple[list[int], int]] = {}  # a group repeats its spec: tokenize once

    def encoded(p: Problem, pre: str) -> tuple[list[int], int]:
        key = (id(p), pre)
        if key not in cache:
            forced = tok.encode(pre) if pre else []
            cache[key] = (problem_prompt_ids(tok, p) + forced, len(forced))
        return cache[key]

    prompts = [encoded(p, pre)[0] for p, pre, _ in specs]
    gen = parts.generator.generate(prompts, SamplingParams(**{**parts.sampling.__dict__, "n": 1, "seed": seed}))
    rows = []
    lengths, toks, lps, masks = gen.mask.sum(1).long().tolist(), gen.tokens.tolist(), gen.logp.tolist(), gen.mask.tolist()
    for i, (p, pre, hint) in enumerate(specs):
        n = lengths[i]
        start = len(prompts[i])
        tokens = toks[i][: start + n]
        n_pre = encoded(p, pre)[1]
        head = start - n_pre
        prefix = [0.0] * (start + n)
        if not hint:  # Prefix-RFT: forced tokens are part of the completion, off the policy mask
            prefix[head:start] = [1.0] * n_pre
        rows.append(Row(p, tokens, lps[i][: start + n], masks[i][: start + n],
                        prefix, pre + gen.texts[i], bool(gen.truncated[i])))
    return rows


def _demo_row(parts, p: Problem) -> Row:
    """A demonstration as a member of the group (LUFFY): behaviour log-probs unknown (0)."""
    prompt = problem_prompt_ids(parts.tok, p)
    comp = parts.tok.encode(p.demo) + [parts.tok.eos_id]
    n = len(prompt) + len(comp)
    return Row(p, prompt + comp, [0.0] * n, [0.0] * len(prompt) + [1.0] * len(comp), [0.0] * n,
               p.demo, False, offpolicy=True)


def _score(parts, rows: list[Row]) -> dict[str, float]:
    """Verdict and reward of every row: the reward runner when configured, else each problem's
    verifier inline (an exception scores 0 and is counted); then DAPO overlong shaping."""
    metrics: dict[str, float] = {}
    if parts.rewards is None:
        errors = 0
        for r in rows:
            try:
                r.verdict = verify(r.problem, r.text)
            except Exception as e:  # a user verifier's bug must not stop training
                r.verdict, errors = Verdict(0.0, None, f"verifier error: {type(e).__name__}: {e}"), errors + 1
            r.reward = r.verdict.score
        metrics["reward/errors"] = float(errors)
    else:
        verdicts, metrics = parts.rewards.score([r.problem for r in rows], [r.text for r in rows],
                                                [int(sum(r.mask)) for r in rows])
        for r, v in zip(rows, verdicts):
            r.verdict, r.reward = v, v.reward
    if parts.rl.overlong_cache > 0:
        for r in (r for r in rows if not r.offpolicy):
            pen = dapo_overlong_penalty(torch.tensor([sum(r.mask)]), parts.sampling.max_new_tokens, parts.rl.overlong_cache)
            r.reward += float(pen[0])
    return metrics


def _add_reward_metrics(acc: dict, new: dict) -> None:
    for k, v in new.items():
        acc[k] = acc.get(k, 0.0) + v if k in ("reward/errors", "reward/timeouts") else v


def sample_round(parts, indices: list[int], seed: int, progress: float) -> tuple[list[Group], dict]:
    """G rows per prompt: on-policy samples (some from a prefix) and demonstrations."""
    g, opts = parts.sampling.n, parts.rl
    ratio = opts.prefix_ratio(progress) if callable(opts.prefix_ratio) else float(opts.prefix_ratio)
    specs, layout = [], []
    for idx in indices:
        p = parts.pool[idx]
        k_off = min(opts.offpolicy_per_group, g - 1) if p.demo is not None else 0
        k_pre = min(opts.prefix_rows, g - k_off) if p.demo is not None else 0
        specs += [(p, demo_prefix(p.demo, ratio) if j < k_pre else "", False) for j in range(g - k_off)]
        layout.append((idx, g - k_off, k_off))
    rows = iter(_generate(parts, specs, seed))
    groups = []
    for idx, n_on, k_off in layout:
        grp = Group(idx, [next(rows) for _ in range(n_on)])
        grp.rows += [_demo_row(parts, parts.pool[idx]) for _ in range(k_off)]
        groups.append(grp)
    return groups, _score(parts, [r for gr in groups for r in gr.rows])


def apply_hints(parts, groups: list[Group], seed: int) -> dict[str, float]:
    """GHPO: re-sample groups that all failed with a growing share of the solution as a hint."""
    hinted, metrics = 0, {}
    for level, ratio in enumerate(parts.rl.hint_levels):
        failing = [gr for gr in groups if parts.pool[gr.index].demo is not None
                   and not any(r.verdict.correct for r in gr.rows)]
        if not failing:
            break
        g = parts.sampling.n
        specs = [(parts.pool[gr.index], demo_prefix(parts.pool[gr.index].demo, ratio), True)
                 for gr in failing for _ in range(g)]
        rows = _generate(parts, specs, seed + 101 * (level + 1))
        _add_reward_metrics(metrics, _score(parts, rows))
        for i, gr in enumerate(failing):
            gr.rows = rows[i * g : (i + 1) * g]
        hinted += len(failing) if level == 0 else 0
    if parts.rl.hint_levels:
        metrics["mix/hinted_fraction"] = hinted / max(1, len(groups))
    return metrics


def _has_variance(gr: Group) -> bool:
    """DAPO's dynamic-sampling constraint 0 < #correct < G (arXiv:2503.14476, eq. 11): on
    accuracy, not on the shaped reward, so a group of wrong answers whose rewards differ only
    by the overlong penalty (or a format bonus) is still dropped, as in DAPO's verl recipe
    (`filter_groups.metric: acc`)."""
    correct = [r.verdict is not None and r.verdict.correct for r in gr.rows]
    return any(correct) and not all(correct)


def sample_groups(parts, indices: list[int], seed: int, progress: float) -> tuple[list[Group], list[Group], dict]:
    """Rounds of sampling under the zero-variance policy; returns (kept groups, all sampled)."""
    opts = parts.rl
    first, metrics = sample_round(parts, indices, seed, progress)
    _add_reward_metrics(metrics, apply_hints(parts, first, seed))
    sampled = list(first)
    if opts.zero_variance == "keep":
        return first, sampled, metrics
    kept = [gr for gr in first if _has_variance(gr)]
    metrics["adv/zero_std_frac_sampled"] = 1 - len(kept) / max(1, len(first))
    rounds = 1
    while opts.zero_variance == "refill" and len(kept) < parts.batch_size and rounds <= opts.max_refill_rounds:
        more, m = sample_round(parts, parts.sampler.next(parts.batch_size), seed + 7919 * rounds, progress)
        _add_reward_metrics(metrics, m)
        _add_reward_metrics(metrics, apply_hints(parts, more, seed + 7919 * rounds))
        sampled += more
        kept += [gr for gr in more if _has_variance(gr)]
        rounds += 1
    metrics.update({"rollout/refill_rounds": float(rounds - 1), "rollout/kept_groups": float(min(len(kept), parts.batch_size))})
    return kept[: parts.batch_size], sampled, metrics


def _merge(groups: list[Group], pad_id: int) -> dict:
    rows = [r for gr in groups for r in gr.rows]
    return {
        "tokens": pad([r.tokens for r in rows], pad_id, torch.long),
        "logp": pad([r.logp for r in rows], 0.0, torch.float32),
        "mask": pad([r.mask for r in rows], 0.0, torch.float32),
        "prefix": pad([r.prefix for r in rows], 0.0, torch.float32),
        "truncated": torch.tensor([r.truncated for r in rows]),
        "offpolicy": torch.tensor([r.offpolicy for r in rows]),
        "rewards": torch.tensor([r.reward for r in rows], dtype=torch.float32),
        "group_ids": torch.tensor([i for i, gr in enumerate(groups) for _ in gr.rows]),
        "problems": [r.problem for r in rows], "texts": [r.text for r in rows],
        "verdicts": [r.verdict for r in rows],
    }


@torch.no_grad()
def _greedy_rewards(parts, problems: list[Problem], group_ids: Tensor, seed: int) -> Tensor:
    """ReMax baseline: the reward of each prompt's greedy completion, repeated per row."""
    firsts = [problems[i] for i in range(len(problems)) if i == 0 or group_ids[i] != group_ids[i - 1]]
    prompts = [problem_prompt_ids(parts.tok, p) for p in firsts]
    params = SamplingParams(n=1, max_new_tokens=parts.sampling.max_new_tokens, temperature=0.0,
                            stop=parts.sampling.stop, seed=seed)
    gen = parts.generator.generate(prompts, params)
    if parts.rewards is not None:
        verdicts = parts.rewards.score(firsts, gen.texts, [int(m.sum()) for m in gen.mask])[0]
        r = torch.tensor([v.reward for v in verdicts], dtype=torch.float32)
    else:
        r = torch.tensor([verify(p, t).score for p, t in zip(firsts, gen.texts)], dtype=torch.float32)
    return r[group_ids]


def _frozen(model, tokens: Tensor, mask: Tensor, temperature: float) -> Tensor:
    return frozen_logprobs(model, tokens, mask, temperature)


def rollout(parts, indices: list[int], seed: int, kl_coef: float,
            progress: float = 0.0) -> tuple[RolloutBatch | None, dict, list[PromptStats]]:
    """Sample, score and prepare one batch; None when every group was dropped."""
    t0 = time.perf_counter()
    kept, sampled, metrics = sample_groups(parts, indices, seed, progress)
    t1 = time.perf_counter()
    if not kept:
        metrics.update({"time/rollout": t1 - t0, "rollout/empty_batch": 1.0})
        return None, metrics, _prompt_stats(sampled, None)
    m = _merge(kept, parts.tok.pad_id)
    batch = _finish(parts, m, seed, kl_coef, metrics)
    metrics.update(_rollout_metrics(batch, m))
    metrics.update({"time/rollout": t1 - t0, "time/reward": time.perf_counter() - t1,
                    "perf/tokens_per_s": metrics["perf/gen_tokens"] / max(t1 - t0, 1e-9)})
    return batch, metrics, _prompt_stats(sampled, batch)


def _finish(parts, m: dict, seed: int, kl_coef: float, metrics: dict) -> RolloutBatch:
    mask = m["mask"] * (~m["truncated"]).float()[:, None] if parts.rl.mask_truncated else m["mask"]
    temp, group_ids = parts.sampling.temperature, m["group_ids"]
    trained = torch.maximum(mask, m["prefix"])  # tokens any objective may read
    ref_logp = _frozen(parts.ref_model, m["tokens"], trained, temp) if parts.ref_model is not None else None
    teacher = _frozen(parts.teacher, m["tokens"], trained, temp) if parts.teacher is not None else None
    values = returns = greedy = None
    if parts.critic is not None:
        with torch.no_grad():
            values = parts.critic(m["tokens"]) * mask
    if "greedy" in parts.advantage_fn.needs:
        greedy = _greedy_rewards(parts, m["problems"], group_ids, seed + 1)
    rewards: Tensor = m["rewards"]
    if parts.rl.kl_reward_coef > 0:
        rewards = kl_in_reward(rewards, m["logp"], ref_logp, mask, kl_coef, parts.rl.kl_reward_estimator)
        kl = ((m["logp"] - ref_logp) * mask).sum() / mask.sum().clamp(min=1)
        metrics.update({"policy/kl_reward": float(kl), "policy/kl_coef": kl_coef})
    adv = parts.advantage_fn(rewards, group_ids, mask, values=values, greedy_rewards=greedy)
    if values is not None:
        returns = gae_returns(rewards, mask, values, **_gae_knobs(parts.advantage_fn))
    has_prefix, has_off = bool(m["prefix"].any()), bool(m["offpolicy"].any())
    return RolloutBatch(tokens=m["tokens"], mask=mask, old_logp=m["logp"], group_ids=group_ids,
                        rewards=m["rewards"], advantages=adv * mask, truncated=m["truncated"],
                        problems=m["problems"], texts=m["texts"], verdicts=m["verdicts"],
                        ref_logp=ref_logp, values=values, returns=returns,
                        offpolicy=m["offpolicy"] if has_off else None,
                        prefix_mask=m["prefix"] if has_prefix else None, teacher_logp=teacher)


def _gae_knobs(fn) -> dict:
    kw = getattr(fn, "keywords", {}) or {}
    return {k: kw[k] for k in ("gamma", "lam") if k in kw}


def _rollout_metrics(batch: RolloutBatch, m: dict) -> dict[str, float]:
    on = ~m["offpolicy"]
    rewards, lengths = batch.rewards[on], m["mask"][on].sum(1)
    n_groups = int(batch.group_ids.max()) + 1
    std = [batch.rewards[batch.group_ids == i].std() if int((batch.group_ids == i).sum()) > 1 else torch.tensor(0.0)
           for i in range(n_groups)]
    out = {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "reward/acc": sum(v.correct for v, o in zip(batch.verdicts, on.tolist()) if o) / max(1, int(on.sum())),
        "rollout/len_mean": float(lengths.mean()), "rollout/truncated_frac": float(batch.truncated[on].float().mean()),
        "adv/zero_std_frac": float(sum(float(s) == 0.0 for s in std) / n_groups),
        "adv/abs_mean": float(batch.advantages.abs().sum() / batch.mask.sum().clamp(min=1)),
        "perf/gen_tokens": float(lengths.sum()),
    }
    if batch.offpolicy is not None:
        out["mix/offpolicy_fraction"] = float(batch.offpolicy.float().mean())
    if batch.prefix_mask is not None:
        out["mix/prefix_tokens"] = float(batch.prefix_mask.sum() / max(1, int((batch.prefix_mask.sum(1) > 0).sum())))
    return out


def _prompt_stats(groups: list[Group], batch: RolloutBatch | None) -> list[PromptStats]:
    """Per sampled prompt: pass rate, reward std, mean |advantage| (0 for a dropped group)."""
    adv: dict[int, float] = {}
    if batch is not None:
        per_row = batch.advantages.abs().sum(1) / batch.mask.sum(1).clamp(min=1)
        for gid in range(int(batch.group_ids.max()) + 1):
            adv[id(batch.problems[int((batch.group_ids == gid).nonzero()[0])])] = float(per_row[batch.group_ids == gid].mean())
    out = []
    for gr in groups:
        p = gr.rows[0].problem
        r = torch.tensor(gr.rewards())
        out.append(PromptStats(index=gr.index, task=p.task, source=p.source or p.task, difficulty=p.difficulty,
                               reward_mean=float(r.mean()), reward_std=float(r.std()) if len(r) > 1 else 0.0,
                               adv_abs_mean=adv.get(id(p), 0.0)))
    return out
