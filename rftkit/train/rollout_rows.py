"""The engine- and verifier-facing half of the rollout: what `train/step.py` calls to turn row
specs into verified rows, rows into a padded batch, and a batch into metrics.

    generate(parts, [(problem, RowSpec)], seed) -> [Row]   sample one completion per spec
    demo_row(parts, problem) -> Row                         a demonstration as a group member
    score(parts, rows) -> metrics                           verdict and reward of every row
    collate(groups, pad_id) -> dict of padded tensors       rows -> [N, T] tensors + lists
    greedy_rewards(parts, problems, group_ids, seed) -> [N] ReMax's greedy-completion baseline
    rollout_metrics(batch, collated) / prompt_stats(groups, batch)

The decisions (which rows, which groups to keep or redo, how rewards are shaped) are the
registered parts of `rftkit.algos.layouts`, `.resample` and `.shaping`; nothing here decides.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rftkit.algos.groups import group_reduce, group_rows
from rftkit.algos.layouts import Group, Row, RowSpec
from rftkit.data.samplers import PromptStats
from rftkit.envs.episodes import episode_stats, generate_rows
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.rollout.base import SamplingParams
from rftkit.tasks.base import verify
from rftkit.train.batches import completion_ids, pad
from rftkit.types import Problem, RolloutBatch, Verdict


def generate(parts, specs: list[tuple[Problem, RowSpec]], seed: int) -> list[Row]:
    """Sample one completion per (problem, spec): the prompt, then the spec's forced prefix."""
    tok = parts.tok
    cache: dict[tuple[int, str], tuple[list[int], int]] = {}  # a group repeats its spec: tokenize once

    def encoded(p: Problem, pre: str) -> tuple[list[int], int]:
        key = (id(p), pre)
        if key not in cache:
            forced = tok.encode(pre) if pre else []
            cache[key] = (problem_prompt_ids(tok, p) + forced, len(forced))
        return cache[key]

    prompts = [encoded(p, s.prefix)[0] for p, s in specs]
    params = SamplingParams(**{**parts.sampling.__dict__, "n": 1, "seed": seed})
    gen, episodes = generate_rows(parts.generator, tok, [p for p, _ in specs], prompts, params,
                                  parts.episode_limits, context_of(parts.model))
    rows = []
    lengths, toks = gen.mask.sum(1).long().tolist(), gen.tokens.tolist()
    lps, masks = gen.logp.tolist(), gen.mask.tolist()
    for i, (p, s) in enumerate(specs):
        n, start = lengths[i], int(gen.prompt_lens[i])
        n_pre = encoded(p, s.prefix)[1]
        prefix = [0.0] * (start + n)
        if not s.hint:  # Prefix-RFT: forced tokens are part of the completion, off the policy mask
            prefix[start - n_pre:start] = [1.0] * n_pre
        ep = episodes[i]
        end = start + (n if ep is None else sum(len(ids) for ids, _, _ in ep.segments))
        rows.append(Row(p, toks[i][:end], lps[i][:end], masks[i][:end], prefix + [0.0] * (end - len(prefix)),
                        s.prefix + gen.texts[i], bool(gen.truncated[i]), episode=ep))
    return rows


def context_of(model) -> int:
    """The model's context in tokens (built-in and HF policies both carry `cfg.max_seq_len`)."""
    return int(getattr(getattr(model, "cfg", None), "max_seq_len", 1 << 30))


def demo_row(parts, p: Problem) -> Row:
    """A demonstration as a member of the group (LUFFY): behaviour log-probs unknown (0)."""
    prompt = problem_prompt_ids(parts.tok, p)
    comp, trained = completion_ids(parts.tok, p, p.demo)  # a multi-turn demo's observations stay untrained
    n = len(prompt) + len(comp)
    return Row(p, prompt + comp, [0.0] * n, [0.0] * len(prompt) + trained, [0.0] * n, p.demo, False, offpolicy=True)


def score(parts, rows: list[Row]) -> dict[str, float]:
    """Verdict and reward of every row: the reward runner when configured, else each problem's
    verifier inline (an exception scores 0 and is counted)."""
    if parts.rewards is not None:
        verdicts, metrics = parts.rewards.score([r.problem for r in rows], [r.text for r in rows],
                                                [int(sum(r.mask)) for r in rows])
        for r, v in zip(rows, verdicts, strict=True):
            r.verdict, r.reward = v, v.reward + _env_reward(r)
        return metrics
    errors = 0
    for r in rows:
        try:
            r.verdict = verify(r.problem, r.text)
        except Exception as e:  # a user verifier's bug must not stop training
            r.verdict, errors = Verdict(0.0, None, f"verifier error: {type(e).__name__}: {e}"), errors + 1
        r.reward = r.verdict.score + _env_reward(r)
    return {"reward/errors": float(errors)}


def _env_reward(r: Row) -> float:
    """A multi-turn row's environment rewards (per turn), added to the verifier's outcome."""
    return float(sum(r.episode.turn_rewards)) if r.episode is not None else 0.0


def add_reward_metrics(acc: dict, new: dict) -> None:
    """Merge scoring metrics of another round: error and timeout counts add up."""
    for k, v in new.items():
        acc[k] = acc.get(k, 0.0) + v if k in ("reward/errors", "reward/timeouts") else v


def collate(groups: list[Group], pad_id: int) -> dict:
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
        "verdicts": [r.verdict for r in rows], **_turns(rows),
    }


def _turns(rows: list[Row]) -> dict:
    """Multi-turn rows: episodes [N], turn_ends [N, T] (1 at each model turn's last token) and
    turn_rewards [N, T] (the env's reward after that turn, there); {} when no row has turns."""
    if not any(r.episode is not None for r in rows):
        return {}
    ends, rewards = [], []
    for r in rows:
        e, w = [0.0] * len(r.tokens), [0.0] * len(r.tokens)
        if r.episode is not None:
            pos, k = len(r.tokens) - sum(len(ids) for ids, _, _ in r.episode.segments), 0
            for ids, model, _ in r.episode.segments:
                pos += len(ids)
                if model and ids:
                    e[pos - 1], w[pos - 1] = 1.0, r.episode.turn_rewards[k] if k < len(r.episode.turn_rewards) else 0.0
                k += model
        ends.append(e)
        rewards.append(w)
    return {"episodes": [r.episode for r in rows], "turn_ends": pad(ends, 0.0, torch.float32),
            "turn_rewards": pad(rewards, 0.0, torch.float32)}


@torch.no_grad()
def greedy_rewards(parts, problems: list[Problem], group_ids: Tensor, seed: int) -> Tensor:
    """ReMax baseline: the reward of each prompt's greedy completion, repeated per row."""
    firsts = [problems[i] for i in range(len(problems)) if i == 0 or group_ids[i] != group_ids[i - 1]]
    prompts = [problem_prompt_ids(parts.tok, p) for p in firsts]
    params = SamplingParams(n=1, max_new_tokens=parts.sampling.max_new_tokens, temperature=0.0,
                            stop=parts.sampling.stop, seed=seed)
    # a multi-turn problem's baseline is its greedy episode: outcome plus the env's turn rewards
    gen, episodes = generate_rows(parts.generator, parts.tok, firsts, prompts, params, parts.episode_limits,
                                  context_of(parts.model))
    env = torch.tensor([sum(e.turn_rewards) if e is not None else 0.0 for e in episodes], dtype=torch.float32)
    if parts.rewards is not None:
        verdicts = parts.rewards.score(firsts, gen.texts, [int(m.sum()) for m in gen.mask])[0]
        r = torch.tensor([v.reward for v in verdicts], dtype=torch.float32)
    else:
        r = torch.tensor([verify(p, t).score for p, t in zip(firsts, gen.texts, strict=True)], dtype=torch.float32)
    return (r + env)[group_ids]


def rollout_metrics(batch: RolloutBatch, m: dict) -> dict[str, float]:
    on = ~m["offpolicy"]
    rewards, lengths = batch.rewards[on], m["mask"][on].sum(1)
    stats = group_reduce(batch.rewards, batch.group_ids)
    out = {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "reward/acc": sum(v.correct for v, o in zip(batch.verdicts, on.tolist(), strict=True) if o)
        / max(1, int(on.sum())),
        "rollout/len_mean": float(lengths.mean()), "rollout/truncated_frac": float(batch.truncated[on].float().mean()),
        "adv/zero_std_frac": float((stats.max == stats.min).sum()) / len(stats.max),  # all rewards equal
        "adv/abs_mean": float(batch.advantages.abs().sum() / batch.mask.sum().clamp(min=1)),
        "perf/gen_tokens": float(lengths.sum()),
    }
    if batch.offpolicy is not None:
        out["mix/offpolicy_fraction"] = float(batch.offpolicy.float().mean())
    if batch.episodes is not None:
        out.update({f"env/{k}": v for k, v in episode_stats([e for e in batch.episodes if e is not None]).items()})
    if batch.prefix_mask is not None:
        out["mix/prefix_tokens"] = float(batch.prefix_mask.sum() / max(1, int((batch.prefix_mask.sum(1) > 0).sum())))
    return out


def prompt_stats(groups: list[Group], batch: RolloutBatch | None) -> list[PromptStats]:
    """Per sampled prompt: pass rate, reward std, mean |advantage| (0 for a dropped group)."""
    adv: dict[int, float] = {}
    if batch is not None:
        per_row = batch.advantages.abs().sum(1) / batch.mask.sum(1).clamp(min=1)
        for rows in group_rows(batch.group_ids).values():
            adv[id(batch.problems[rows[0]])] = float(per_row[rows].mean())
    out = []
    for gr in groups:
        p = gr.rows[0].problem
        r = torch.tensor(gr.rewards())
        out.append(PromptStats(index=gr.index, task=p.task, source=p.source or p.task, difficulty=p.difficulty,
                               reward_mean=float(r.mean()), reward_std=float(r.std()) if len(r) > 1 else 0.0,
                               adv_abs_mean=adv.get(id(p), 0.0)))
    return out
