"""Multi-turn credit assignment and tool-use rewards: pure parts for episodes with several model turns.

A multi-turn row is [prompt][turn 1, mask 1][observation, mask 0][turn 2, mask 1]...; the loop
gives turn_ends [N, T] (1 at each model turn's last token), turn_rewards [N, T] (the environment's
reward after that turn, there) and per-row summed environment info (`episode_info`). The
rollout's reward [N] is the verifier's outcome plus the sum of the environment's turn rewards.
Turn k of a row spans the tokens after turn k-1's end up to and including turn k's end (its
observation tokens come first, with mask 0); a row without turn ends (a one-turn row, a
demonstration) is one turn ending at its last trained token.

    tool_cost         (transform)  r - cost * tool calls (- error_cost * failed calls)
    tool_call_reward  (transform)  r + weight * call score (+ format_weight * format), ToolRL
    turn_rewards      (transform)  [N, T]: each turn's env reward at its end, the rest of r
                                   (the verifier's outcome and sequence shaping) at the last turn end
    turn_grpo         (advantage)  group-normalized discounted return-to-go over turns (GTPO-style)
    turn_gae          (advantage)  GAE over turns with the critic's value before each turn (ArCHer-style)

The two estimators carry the marks of `advantages.estimator` plus `turn_ends`: the step passes
`turn_ends=` to an estimator with that mark (None for a batch without episodes). Token-level
policy gradient within a turn: every trained token of turn k gets turn k's advantage;
observation tokens (mask 0) get exactly 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from rftkit.algos.advantages import ADVANTAGES, masked_whiten
from rftkit.algos.shaping import REWARD_TRANSFORMS, RewardBatch, Shaped

TOOL_FAILURES = ("tool_errors", "tool_malformed", "tool_unknown", "tool_timeouts")
"""Episode info keys that count a failed tool call (as `rftkit.envs.episodes.TOOL_FAILURES`,
which algos/ may not import: envs/ stands on a higher floor)."""


def episode_info(episodes: Iterable | None) -> dict[str, Tensor] | None:
    """Per-row environment info as float tensors [N]: every numeric key any episode reports
    (summed over its turns, e.g. tool_calls, tool_errors, call_score), missing keys 0, plus
    `turns` (model turns) and `episode` (1 for a multi-turn row, 0 for a one-turn or
    demonstration row). None when no row is an episode. `episodes`: [N] of Episode or None."""
    if episodes is None:
        return None
    eps = list(episodes)
    if all(e is None for e in eps):
        return None
    keys = sorted({k for e in eps if e is not None for k in e.info})
    out = {k: torch.tensor([float(e.info.get(k, 0.0)) if e is not None else 0.0 for e in eps]) for k in keys}
    out["turns"] = torch.tensor([float(e.turns) if e is not None else 0.0 for e in eps])
    out["episode"] = torch.tensor([1.0 if e is not None else 0.0 for e in eps])
    return out


def _info(batch: RewardBatch, key: str, like: Tensor) -> Tensor:
    """One info key [N] (0 without episodes or for rows that never reported it)."""
    info = batch.episode_info or {}
    return info[key].to(like) if key in info else torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)


# ---- turn layout -----------------------------------------------------------------------------


def turn_layout(turn_ends: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where turns end, each token's turn and each row's number of turns.

    ends [N, T] bool: turn_ends > 0, plus each row's last trained token (so a row without turn
    ends, or a batch without them, is one turn: the one-turn special case). idx [N, T] long:
    the turn of token t = the number of ends before t. count [N] long: the row's turns (ends).
    Shapes: turn_ends [N, T] or None, mask [N, T] -> ([N, T], [N, T], [N]).
    """
    trained = mask > 0
    n, t_len = mask.shape
    last = (t_len - 1) - torch.flip(trained, [-1]).float().argmax(-1)
    ends = torch.zeros_like(trained)
    rows = torch.arange(n, device=mask.device)
    has = trained.any(1)
    ends[rows[has], last[has]] = True
    if turn_ends is not None:
        ends |= turn_ends > 0
    cum = ends.long().cumsum(1)
    return ends, cum - ends.long(), cum[:, -1]


def per_turn_rewards(rewards: Tensor, idx: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """r [N, K] (K = the most turns of a row, at least 1) and valid [N, K] (k < count).

    Token-level rewards [N, T] are summed over each turn's span (at the turn ends for
    `turn_rewards`); a sequence reward [N] is the last turn's reward (the outcome arrives when
    the episode ends). Shapes: rewards [N] or [N, T], idx [N, T], count [N] -> [N, K], [N, K].
    """
    k = max(int(count.max()) if count.numel() else 0, 1)
    valid = torch.arange(k, device=count.device)[None, :] < count[:, None]
    r = torch.zeros(count.shape[0], k, dtype=torch.float32, device=count.device)
    if rewards.dim() == 2:
        inside = idx < count[:, None]
        r.scatter_add_(1, idx.clamp(max=k - 1), rewards.float() * inside)
    else:
        has = count > 0
        r[has, count[has] - 1] = rewards.float()[has]
    return r, valid


def spread(per_turn: Tensor, idx: Tensor, count: Tensor, mask: Tensor) -> Tensor:
    """Each trained token gets its turn's value: [N, K] -> [N, T], 0 where mask = 0."""
    out = per_turn.gather(1, idx.clamp(max=per_turn.shape[1] - 1))
    return out * (idx < count[:, None]) * mask


def keyed_norm(x: Tensor, valid: Tensor, keys: Tensor, normalize_std: bool, eps: float) -> Tensor:
    """(x - mean) / (std + eps) over the valid entries sharing a key (unbiased std, a set of one
    has std 0, as `advantages.group_stats`); 0 where not valid. Shapes: [N, K] -> [N, K]."""
    v = x[valid]
    out = torch.zeros_like(x)
    if v.numel() == 0:
        return out
    _, inv = torch.unique(keys[valid], return_inverse=True)
    k = int(inv.max()) + 1
    count = v.new_zeros(k).index_add_(0, inv, torch.ones_like(v))
    mean = v.new_zeros(k).index_add_(0, inv, v) / count
    sq = v.new_zeros(k).index_add_(0, inv, (v - mean[inv]) ** 2)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    adv = v - mean[inv]
    out[valid] = adv / (std[inv] + eps) if normalize_std else adv
    return out


# ---- advantage estimators --------------------------------------------------------------------


@ADVANTAGES.register("turn_grpo", group_relative=True, returns=False, turn_ends=True)
def turn_grpo_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                         greedy_rewards: Tensor | None = None, turn_ends: Tensor | None = None, *,
                         gamma: float = 1.0, by: Literal["turn", "group"] = "turn", normalize_std: bool = True,
                         eps: float = 1e-6) -> tuple[Tensor, None]:
    """Turn-level GRPO: group-normalized discounted return-to-go of each turn.

    G_{i,k} = sum_{j >= k} gamma^(j - k) r_{i,j} over the turns of episode i, r_{i,j} the
    reward of turn j (token rewards summed over the turn: `turn_rewards` puts the env reward
    at each turn's end and the outcome at the last; an [N] reward is the last turn's). Then
    A_{i,k} = (G_{i,k} - mean(S)) / (std(S) + eps), S = the returns G_{., k} at the same turn
    index k of every episode of i's group that reached turn k (`by="turn"`), or every turn's
    return of the group (`by="group"`); unbiased std, as `grpo`; `normalize_std=False` drops
    the division (Dr.GRPO-style). Every trained token of turn k gets A_{i,k}; observation
    tokens get 0. One turn per row (or no `turn_ends`): exactly `grpo`, whatever gamma.
    Sources: "normalized discounted returns as advantages" is GTPO (Ding et al. 2025,
    arXiv:2511.14846, abstract); turn-level group-relative advantages are MT-GRPO (Zeng et
    al. 2025, arXiv:2505.11821). Normalizing per turn index (a turn is compared with the
    same turn of the other episodes; one episode alone at its turn k gets 0 there) is our
    choice, not checked against either paper's code.
    Shapes: rewards [N] or [N, T], group_ids [N], mask [N, T], turn_ends [N, T] -> [N, T].
    """
    _, idx, count = turn_layout(turn_ends, mask)
    r, valid = per_turn_rewards(rewards, idx, count)
    g = torch.zeros_like(r)
    running = r.new_zeros(r.shape[0])
    for k in reversed(range(r.shape[1])):
        running = r[:, k] + gamma * running
        g[:, k] = running
    _, grp = torch.unique(group_ids, return_inverse=True)
    turn = torch.arange(r.shape[1], device=r.device)[None, :]
    keys = grp[:, None] * r.shape[1] + turn if by == "turn" else grp[:, None].expand_as(r)
    return spread(keyed_norm(g, valid, keys, normalize_std, eps), idx, count, mask), None


def turn_start_values(values: Tensor, idx: Tensor, count: Tensor, mask: Tensor, k: int) -> Tensor:
    """V_{i,k} = values at turn k's first trained token (the critic's value of the state
    before the turn: values[:, t] is V(tokens[:, :t])); 0 for turns past the row's last.
    Shapes: values [N, T], idx [N, T], count [N], mask [N, T] -> [N, K]."""
    n, t_len = values.shape
    pos = torch.arange(t_len, device=values.device).expand(n, t_len)
    pos = torch.where((mask > 0) & (idx < count[:, None]), pos, torch.full_like(pos, t_len))
    first = torch.full((n, k), t_len, dtype=pos.dtype, device=values.device)
    first = first.scatter_reduce(1, idx.clamp(max=k - 1), pos, reduce="amin")
    return values.gather(1, first.clamp(max=t_len - 1)) * (first < t_len)


@ADVANTAGES.register("turn_gae", needs={"values"}, group_relative=False, returns=True, turn_ends=True)
def turn_gae_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                        greedy_rewards: Tensor | None = None, turn_ends: Tensor | None = None, *,
                        gamma: float = 1.0, lam: float = 0.95, whiten: bool = True) -> tuple[Tensor, Tensor]:
    """Turn-level critic: GAE(gamma, lambda) over turns, one advantage per turn, token-level
    policy gradient within the turn.

    V_k = the critic's value at turn k's first trained token (the state before the turn),
    V_K = 0 after the last turn; delta_k = r_k + gamma V_{k+1} - V_k; A_k = delta_k +
    gamma lam A_{k+1}; r_k the turn's reward as in `turn_grpo`. Every trained token of turn k
    gets A_k (whitened over the batch's trained tokens when `whiten`, as `gae`); the value
    targets are returns R_k = A_k (un-whitened) + V_k on every trained token of turn k, so
    the `value` objective fits the critic's value at each of the turn's tokens to the turn's
    return, as `gae` returns A + V per token. lambda = 1, gamma = 1: A_k = return-to-go - V_k;
    lambda = 0: the one-step TD advantage r_k + gamma V_{k+1} - V_k.
    Source: ArCHer (Zhou et al. 2024, arXiv:2402.19446): an utterance-level critic gives each
    turn its advantage and the token-level policy is trained with it. ArCHer trains Q and V
    critics off-policy with TD targets and target networks; here the critic is the stage's
    state-value model trained on these returns (our simplification), and GAE over turns
    (Schulman et al. 2016, arXiv:1506.02438) replaces the one-step TD error (lam = 0 is it).
    Shapes: rewards [N] or [N, T], values [N, T] (masked), mask [N, T], turn_ends [N, T]
    -> (advantages [N, T], returns [N, T]).
    """
    if values is None:
        raise ValueError("advantage estimator 'turn_gae' needs `values`; the loop must pass it by keyword")
    _, idx, count = turn_layout(turn_ends, mask)
    r, valid = per_turn_rewards(rewards, idx, count)
    v = turn_start_values(values.float(), idx, count, mask, r.shape[1])
    adv = torch.zeros_like(r)
    last = r.new_zeros(r.shape[0])
    for k in reversed(range(r.shape[1])):
        next_v = v[:, k + 1] if k + 1 < r.shape[1] else torch.zeros_like(last)
        last = (r[:, k] + gamma * next_v - v[:, k] + gamma * lam * last) * valid[:, k]
        adv[:, k] = last
    tok_adv = spread(adv, idx, count, mask)
    returns = spread(adv + v, idx, count, mask)
    return (masked_whiten(tok_adv, mask) if whiten else tok_adv), returns


# ---- reward transforms -----------------------------------------------------------------------


@REWARD_TRANSFORMS.register("tool_cost")
def tool_cost(rewards: Tensor, batch: RewardBatch, *, cost: float = 0.05, error_cost: float = 0.0) -> Shaped:
    """A cost per tool call: r - cost * tool_calls - error_cost * failed calls.

    tool_calls and the failed calls (tool_errors + tool_malformed + tool_unknown +
    tool_timeouts) are the episode's summed env info; rows without an episode pay nothing.
    Keeps the model from calling tools it does not need (the issue's "a cost per call");
    the coefficients are the user's (defaults are our choice, not a paper's). Metric:
    reward/tool_cost (mean cost per row). Shapes: rewards [N] -> [N].
    """
    calls = _info(batch, "tool_calls", rewards)
    failed = sum(_info(batch, k, rewards) for k in TOOL_FAILURES)
    pen = cost * calls + error_cost * failed
    return Shaped(rewards - pen, batch.mask, {"reward/tool_cost": float(pen.mean())})


@REWARD_TRANSFORMS.register("tool_call_reward")
def tool_call_reward(rewards: Tensor, batch: RewardBatch, *, weight: float = 1.0,
                     format_weight: float = 0.0) -> Shaped:
    """ToolRL's correctness and format rewards: r + weight * s + format_weight * f.

    s = the episode's call_score: the tool environments (rftkit/envs/tool_env.py) report,
    after each turn, the change of ToolRL's correctness of all calls so far against the
    problem's gold calls, so the summed info is the score in [0, 1] of the episode's calls
    (tool names by Jaccard, then argument names and values; 1 for an exact match). f = 1 for
    an episode with no malformed call (info tool_malformed = 0), else 0: our analogue of
    ToolRL's R_format in {0, 1} (the output's structure is right). Rows without an episode
    get nothing. ToolRL (Qian et al. 2025, arXiv:2504.13958): R = R_format + R_correct,
    R_correct = 6 s - 3 in [-3, 3]; weight = 6 gives its scale (the constant -3 cancels in
    any group baseline). Metric: reward/tool_call (mean bonus per episode row).
    Shapes: rewards [N] -> [N].
    """
    is_ep = _info(batch, "episode", rewards)
    fmt = (_info(batch, "tool_malformed", rewards) == 0).to(rewards.dtype)
    bonus = (weight * _info(batch, "call_score", rewards) + format_weight * fmt) * is_ep
    rows = is_ep.sum().clamp(min=1)
    return Shaped(rewards + bonus, batch.mask, {"reward/tool_call": float(bonus.sum() / rows)})


@REWARD_TRANSFORMS.register("turn_rewards", token_level=True)
def turn_rewards(rewards: Tensor, batch: RewardBatch) -> Shaped:
    """Token rewards [N, T]: each model turn's environment reward at that turn's last token,
    and the rest of the row's reward, r - sum of its env turn rewards (the verifier's
    outcome and any sequence shaping listed before), at its last turn end.

    For the turn-level estimators (`turn_grpo`, `turn_gae`); any estimator that sums a token
    reward over the mask sees the same total as before. A row without turn ends (one turn)
    gets r at its last trained token, as `token_rewards`. Token-level: list it last.
    Shapes: rewards [N], batch.turn_ends / turn_rewards [N, T] -> [N, T].
    """
    ends, _, count = turn_layout(batch.turn_ends, batch.mask)
    env = batch.turn_rewards.float() * ends if batch.turn_rewards is not None else torch.zeros_like(batch.mask)
    out = env.clone()
    t_len = ends.shape[1]
    last = (t_len - 1) - torch.flip(ends, [-1]).float().argmax(-1)
    has = count > 0
    rows = torch.arange(out.shape[0], device=out.device)[has]
    out[rows, last[has]] += (rewards.float() - env.sum(1))[has]
    return Shaped(out, batch.mask, {"reward/env_turns": float(env.sum(1).mean())})


__all__ = ["TOOL_FAILURES", "episode_info", "keyed_norm", "per_turn_rewards", "spread", "tool_call_reward",
           "tool_cost", "turn_gae_advantages", "turn_grpo_advantages", "turn_layout", "turn_rewards",
           "turn_start_values"]
