"""Advantage estimators: one signature, registered by name.

    AdvantageFn(rewards, group_ids [N], mask [N, T], values=None, greedy_rewards=None, *, knobs)
        -> (advantages [N, T], 0 where mask = 0; returns [N, T] for a critic, or None)

`rewards` is [N] (one scalar per rollout, the usual case) or [N, T] (token-level rewards,
e.g. from `rftkit.algos.shaping.kl_in_reward`); a sequence estimator sums a [N, T] reward
over the mask, a return-based one (reinforce_pp, gae) places an [N] reward on the last
trained token. `values` [N, T] (critic values at rollout time) and `greedy_rewards` [N]
(reward of the greedy completion of each row's prompt) are data the loop passes by keyword
when it has them; an estimator that requires one declares it at registration (`needs`:
"values" / "greedy") and raises ValueError without it. Knobs are keyword-only and bound from
the recipe's `advantage.params` (Registry.bind). The mark `group_relative` flags the
estimators whose baseline is the prompt's own group: with groups of one (rollout.group_size
1) they give advantage 0 everywhere, so the config check refuses that pairing.

Groups of one: every group-baseline estimator here gives such a row advantage 0 (its own
reward is its baseline), unlike verl which keeps the raw reward.
Return-based estimators (reinforce_pp, gae) skip mask = 0 positions in their recursions,
so a return or a GAE trace runs over the trained tokens only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from rftkit.registry import Registry

AdvantageFn = Callable[..., tuple[Tensor, Tensor | None]]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def estimator(name: str, needs: Iterable[str] = (), group_relative: bool = False,
              returns: bool = False) -> Callable[[AdvantageFn], AdvantageFn]:
    """Register an advantage estimator with the optional data it requires, whether it
    normalizes within each prompt's group (then it needs groups of at least two) and whether
    it also returns value targets (a critic can train on them)."""
    return ADVANTAGES.register(name, needs=needs, group_relative=group_relative, returns=returns)


def group_stats(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row group mean, unbiased group std and group size, each [N].

    values [N] float, group_ids [N] long (any labels; rows sharing a label form a group).
    A group of one has std 0.
    """
    _, inv = torch.unique(group_ids, return_inverse=True)
    k = int(inv.max()) + 1
    count = values.new_zeros(k).index_add_(0, inv, torch.ones_like(values))
    mean = values.new_zeros(k).index_add_(0, inv, values) / count
    sq = values.new_zeros(k).index_add_(0, inv, (values - mean[inv]) ** 2)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    return mean[inv], std[inv], count[inv]


def broadcast(seq_adv: Tensor, mask: Tensor) -> Tensor:
    """[N] -> [N, T], zero outside the mask."""
    return seq_adv[:, None] * mask


def seq_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """Sequence rewards [N] from [N] or token-level [N, T] rewards (summed over the mask)."""
    rewards = rewards.float()
    return (rewards * mask).sum(-1) if rewards.dim() == 2 else rewards


def _require(value: Tensor | None, what: str, name: str) -> Tensor:
    if value is None:
        raise ValueError(f"advantage estimator '{name}' needs `{what}`; the loop must pass it by keyword")
    return value


@estimator("grpo", group_relative=True)
def grpo_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                    greedy_rewards: Tensor | None = None, *, normalize_std: bool = True,
                    eps: float = 1e-6) -> Tensor:
    """GRPO: A_i = (r_i - mean_group(r)) / (std_group(r) + eps).

    Shao et al. 2024, "DeepSeekMath" (arXiv:2402.03300), outcome supervision, section 4.1.2;
    checked against verl `compute_grpo_outcome_advantage` (verl/trainer/ppo/core_algos.py).
    The std is the unbiased sample std, as in verl. `normalize_std=False` is `dr_grpo`.
    Shapes: rewards [N] or [N, T], group_ids [N], mask [N, T] -> [N, T]. Equal rewards in a
    group -> 0.
    """
    r = seq_rewards(rewards, mask)
    mean, std, _ = group_stats(r, group_ids)
    adv = r - mean
    if normalize_std:
        adv = adv / (std + eps)
    return broadcast(adv, mask), None


@estimator("dr_grpo", group_relative=True)
def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                       greedy_rewards: Tensor | None = None) -> Tensor:
    """Dr.GRPO: A_i = r_i - mean_group(r), no std division (removes the difficulty bias).

    Liu et al. 2025, "Understanding R1-Zero-Like Training" (arXiv:2503.20783); verl
    `compute_grpo_outcome_advantage(norm_adv_by_std_in_grpo=False)`.
    Pair with aggregation `seq_mean_token_sum_norm` for the paper's constant normalizer.
    Shapes: rewards [N] or [N, T], group_ids [N], mask [N, T] -> [N, T].
    """
    r = seq_rewards(rewards, mask)
    return broadcast(r - group_stats(r, group_ids)[0], mask), None


@estimator("rloo", group_relative=True)
def rloo_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                    greedy_rewards: Tensor | None = None) -> Tensor:
    """RLOO: leave-one-out baseline, A_i = r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean_group).

    Ahmadian et al. 2024, "Back to Basics" (arXiv:2402.14740), after Kool et al. 2019;
    checked against verl `compute_rloo_outcome_advantage`. Unbiased (the baseline does not
    depend on the row's own sample). Groups of one get 0 (verl keeps the raw reward).
    Shapes: rewards [N] or [N, T], group_ids [N], mask [N, T] -> [N, T].
    """
    r = seq_rewards(rewards, mask)
    mean, _, count = group_stats(r, group_ids)
    scale = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.zeros_like(count))
    return broadcast(scale * (r - mean), mask), None


@estimator("lite_ppo", group_relative=True)
def lite_ppo_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                        greedy_rewards: Tensor | None = None, *, eps: float = 1e-6) -> Tensor:
    """Lite PPO: group-level mean, batch-level std, A_i = (r_i - mean_group(r)) / (std_batch(r) + eps).

    Liu et al. 2025, "Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning"
    (arXiv:2508.08221); checked against the authors' framework alibaba/ROLL
    `roll/utils/functionals.py` reward normalization with norm_mean_type="group",
    norm_std_type="batch" (unbiased std over the N sequence rewards, `+ 1e-6`).
    Use with aggregation `token_mean` (the paper's second trick).
    Shapes: rewards [N] or [N, T], group_ids [N], mask [N, T] -> [N, T].
    """
    r = seq_rewards(rewards, mask)
    std = r.std() if r.numel() > 1 else r.new_zeros(())
    return broadcast((r - group_stats(r, group_ids)[0]) / (std + eps), mask), None


@estimator("reinforce")
def reinforce_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                         greedy_rewards: Tensor | None = None) -> Tensor:
    """REINFORCE without a baseline: A_i = r_i on every completion token.

    Williams 1992, "Simple statistical gradient-following algorithms"
    (https://doi.org/10.1007/BF00992696). High variance; a reference point for the others.
    Shapes: rewards [N] or [N, T], group_ids [N] (unused), mask [N, T] -> [N, T].
    """
    return broadcast(seq_rewards(rewards, mask), mask), None


@estimator("remax", needs={"greedy"})
def remax_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                     greedy_rewards: Tensor | None = None) -> Tensor:
    """ReMax: the greedy completion's reward is the baseline, A_i = r_i - r(greedy(prompt_i)).

    Li et al. 2023, "ReMax" (arXiv:2310.10505); checked against verl
    `compute_remax_outcome_advantage` (reward_baselines = reward of the greedy rollout).
    Shapes: rewards [N] or [N, T], greedy_rewards [N], mask [N, T] -> [N, T].
    """
    base = _require(greedy_rewards, "greedy_rewards", "remax")
    return broadcast(seq_rewards(rewards, mask) - base.float(), mask), None


@estimator("psr")
def psr_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                   greedy_rewards: Tensor | None = None) -> Tensor:
    """PSR (positive sample reinforcement): A_i = r_i with r in {0, 1}; only correct samples train.

    Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement in LLM
    Reasoning" (arXiv:2506.01347); checked against TianHongZXY/RLVR-Decomposed
    `compute_psr_nsr_outcome_advantage` (advantage='positive': A = return = r).
    Shapes: rewards [N] or [N, T] (binary), mask [N, T] -> [N, T].
    """
    return broadcast(seq_rewards(rewards, mask), mask), None


@estimator("nsr")
def nsr_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                   greedy_rewards: Tensor | None = None) -> Tensor:
    """NSR (negative sample reinforcement): A_i = r_i - 1; only incorrect samples (r = 0) train.

    Zhu et al. 2025 (arXiv:2506.01347); RLVR-Decomposed `compute_psr_nsr_outcome_advantage`
    (advantage='negative': A = return - 1). Shapes: rewards [N] or [N, T] (binary),
    mask [N, T] -> [N, T].
    """
    return broadcast(seq_rewards(rewards, mask) - 1.0, mask), None


@estimator("w_reinforce")
def w_reinforce_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                           greedy_rewards: Tensor | None = None, *, positive_weight: float = 0.1) -> Tensor:
    """W-REINFORCE: A = lambda for correct (r = 1), -1 for incorrect (r = 0); lambda = 0.1.

    Zhu et al. 2025 (arXiv:2506.01347), recommended lambda 0.1 (README
    `positive_advantage_weight`); RLVR-Decomposed `compute_psr_nsr_outcome_advantage`
    (advantage='weighted'). Written as A = lambda * r - (1 - r), which equals the code on
    binary rewards (the code leaves non-binary rewards unweighted; here they interpolate).
    Shapes: rewards [N] or [N, T], mask [N, T] -> [N, T].
    """
    r = seq_rewards(rewards, mask)
    return broadcast(positive_weight * r - (1.0 - r), mask), None


# ---- return-based (token-level) estimators ------------------------------------------------


def masked_whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries, zero elsewhere.

    verl `masked_whiten` (verl/utils/torch_functional.py): token-weighted mean and the
    Bessel-corrected (unbiased) variance. Shapes: x [N, T], mask [N, T] -> [N, T].
    """
    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1)
    var = (((x - mean) ** 2) * mask).sum() / n.clamp(min=1)
    var = var * n / (n - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """[N] -> [N, T] with r_i on the last masked token of row i; [N, T] -> rewards * mask."""
    if rewards.dim() == 2:
        return rewards.float() * mask
    t = mask.shape[-1]
    last = (t - 1) - torch.flip(mask, dims=[-1]).float().argmax(-1)  # [N]
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    out[torch.arange(mask.shape[0], device=mask.device), last] = rewards.float()
    return out * mask


def discounted_returns(tok_rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = sum_{k >= t, mask_k = 1} gamma^(#masked steps between) r_k, over masked tokens.

    Shapes: tok_rewards [N, T], mask [N, T] -> [N, T] (0 where mask = 0).
    """
    running = tok_rewards.new_zeros(tok_rewards.shape[0])
    out = torch.zeros_like(tok_rewards)
    for t in reversed(range(tok_rewards.shape[1])):
        m = mask[:, t]
        running = torch.where(m > 0, tok_rewards[:, t] + gamma * running, running)
        out[:, t] = running * m
    return out


def _gae_raw(tok_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Un-whitened GAE over masked tokens (masked-out positions are skipped, V after last = 0).

    delta_t = r_t + gamma V_{t'} - V_t (t' = next masked position), A_t = delta_t +
    gamma lam A_{t'}. Mirrors verl `compute_gae_advantage_return` (recent version, which
    carries `nextvalues` / `lastgaelam` across mask = 0 positions). Shapes: [N, T] -> [N, T].
    """
    n, t_len = tok_rewards.shape
    next_v = tok_rewards.new_zeros(n)
    last = tok_rewards.new_zeros(n)
    out = torch.zeros_like(tok_rewards)
    for t in reversed(range(t_len)):
        m = mask[:, t] > 0
        delta = tok_rewards[:, t] + gamma * next_v - values[:, t]
        cur = delta + gamma * lam * last
        next_v = torch.where(m, values[:, t], next_v)
        last = torch.where(m, cur, last)
        out[:, t] = torch.where(m, cur, torch.zeros_like(cur))
    return out


@estimator("reinforce_pp")
def reinforce_pp_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                            greedy_rewards: Tensor | None = None, *, gamma: float = 1.0) -> Tensor:
    """REINFORCE++: discounted token returns, then global (whole-batch) normalization.

    Hu et al. 2025, "REINFORCE++: Stabilizing Critic-Free Policy Optimization with Global
    Advantage Normalization" (arXiv:2501.03262); checked against verl
    `compute_reinforce_plus_plus_outcome_advantage`: G_t = r_t + gamma G_{t+1}, then
    `masked_whiten` over all trained tokens of the batch (token-weighted mean, unbiased
    variance). With an [N] outcome reward and gamma = 1, G_t = r_i on every token. The
    paper folds the per-token KL into the reward: pass `shaping.kl_in_reward(...)` [N, T].
    Shapes: rewards [N] or [N, T], mask [N, T] -> [N, T].
    """
    returns = discounted_returns(token_rewards(rewards, mask), mask, gamma)
    return masked_whiten(returns, mask), None


@estimator("reinforce_pp_baseline", group_relative=True)
def reinforce_pp_baseline_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor,
                                     values: Tensor | None = None,
                                     greedy_rewards: Tensor | None = None) -> Tensor:
    """REINFORCE++ w/ baseline: subtract the group mean, then normalize over the whole batch.

    Hu et al. 2025 (arXiv:2501.03262), the k > 1 variant; checked against verl
    `compute_reinforce_plus_plus_baseline_outcome_advantage`: A_i = r_i - mean_group(r),
    broadcast to tokens, then `masked_whiten` over all trained tokens (token-weighted).
    Shapes: rewards [N] or [N, T], group_ids [N], mask [N, T] -> [N, T].
    """
    r = seq_rewards(rewards, mask)
    return masked_whiten(broadcast(r - group_stats(r, group_ids)[0], mask), mask), None


@estimator("gae", needs={"values"}, returns=True)
def gae_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                   greedy_rewards: Tensor | None = None, *, gamma: float = 1.0, lam: float = 0.95,
                   whiten: bool = True) -> Tensor:
    """PPO with a critic: token-level GAE(gamma, lambda), optionally whitened over the batch.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE"
    (arXiv:1506.02438); LM usage as in PPO-RLHF (Ouyang et al. 2022,
    arXiv:2203.02155) and ReFT (arXiv:2401.08967: gamma = 1, lambda = 0.95, global
    whitening). Checked against verl `compute_gae_advantage_return`. values[:, t] is the
    critic's V(s_t) for the state before token t. The outcome reward sits on the last
    trained token. Returns for the value loss: `gae_returns` (same knobs, un-whitened).
    Shapes: rewards [N] or [N, T], values [N, T], mask [N, T] -> [N, T].
    """
    v = _require(values, "values", "gae").float()
    adv = _gae_raw(token_rewards(rewards, mask), v, mask, gamma, lam)
    returns = (adv + v) * mask  # = gae_returns(rewards, mask, values, gamma=gamma, lam=lam)
    return (masked_whiten(adv, mask) if whiten else adv), returns


def gae_returns(rewards: Tensor, mask: Tensor, values: Tensor, *, gamma: float = 1.0,
                lam: float = 0.95) -> Tensor:
    """Value-loss targets R_t = A_t(GAE, un-whitened) + V_t, 0 where mask = 0.

    Same recursion and conventions as `gae_advantages` (verl returns `advantages + values`
    before whitening). Shapes: rewards [N] or [N, T], mask [N, T], values [N, T] -> [N, T].
    """
    v = values.float()
    return (_gae_raw(token_rewards(rewards, mask), v, mask, gamma, lam) + v) * mask
