"""The update half of a step: forward passes, the weighted objective sum, guarded optimizer steps.

One rollout batch (and/or demonstration batch, and/or preference-pair batch) gives `update_epochs x minibatches`
optimizer steps; each is `grad_accum` micro-batches. A step whose loss or gradient norm is
not finite is skipped (gradients dropped, nothing reaches the weights) and counted; the
loop aborts after `max_bad_steps` of them in a row.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor

from rftkit.algos.advantages import group_stats
from rftkit.algos.objectives import LossInputs, inert_at_zero_advantage
from rftkit.model.logprobs import frozen_logprobs, rollout_logprobs, token_distributions
from rftkit.rollout.weights import bump
from rftkit.types import DemoBatch, PairBatch, RolloutBatch


@dataclass
class UpdateState:
    """What survives across steps (and checkpoints): NaN counters, the adaptive KL coefficient."""

    bad_in_row: int = 0
    bad_total: int = 0
    kl_coef: float | None = None


def _slices(n: int, parts: int) -> list[slice]:
    """`parts` contiguous, near-equal slices of range(n) (empty ones dropped)."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _whole(batch: RolloutBatch | None, demos: DemoBatch | None, pairs: PairBatch | None,
           sl: tuple[slice | None, ...]) -> LossInputs:
    """The mask-like fields of one optimizer step's whole batch: the aggregations' normalizers."""
    rs, ds, ps = sl
    whole = LossInputs()
    if batch is not None and rs is not None:
        whole.mask, whole.rewards = batch.mask[rs], batch.rewards[rs]
        for name in ("offpolicy", "prefix_mask", "step_mask"):
            value = getattr(batch, name)
            setattr(whole, name, None if value is None else value[rs])
    if demos is not None and ds is not None:
        whole.demo_mask = demos.mask[ds]
        whole.demo_weights = None if demos.weights is None else demos.weights[ds]
    if pairs is not None and ps is not None:
        whole.pair_mask = pairs.mask[ps]
    return whole


def _pair_inputs(parts, inp: LossInputs, pairs: PairBatch, ps: slice) -> None:
    """Fill the pair fields: policy log-probs of both sides in one forward (they share the
    prompt, so the shared-prefix forward runs it once), reference log-probs and scores by needs."""
    tokens, mask = pairs.tokens[ps], pairs.mask[ps]
    p, t = tokens.shape[0], tokens.shape[-1]
    flat_t, flat_m = tokens.reshape(2 * p, t), mask.reshape(2 * p, t)
    if _policy_reads_pairs(parts):
        logp, _ = rollout_logprobs(parts.model, flat_t, flat_m, 1.0)
        inp.pair_logp = logp.reshape(p, 2, t)
    inp.pair_mask, inp.pair_rewards = mask, pairs.rewards[ps]
    if "ref_pairs" in parts.needs:
        inp.pair_ref_logp = _frozen_logp(parts.ref_model, flat_t, flat_m, 1.0).reshape(p, 2, t)
    if parts.scorer is not None:
        inp.pair_scores = parts.scorer.score(flat_t, flat_m).reshape(p, 2)


def _policy_reads_pairs(parts) -> bool:
    """Whether an objective reads the policy's log-probs of the pairs (a reward-model stage's
    Bradley-Terry loss reads only the scores: no policy forward)."""
    return any("pairs" in t.fn.needs and "scores" not in t.fn.needs for t in parts.terms)


def _policy_reads_rows(parts) -> bool:
    """Whether to run the policy on the rollout rows: not in a stage whose rollouts only feed a
    pair source (online DPO) or a reward model (its objectives read the scorer), where no
    objective reads the policy's log-probs of them."""
    terms = getattr(parts, "terms", None)
    if terms is None or any("rollout" in t.fn.needs and "scores" not in t.fn.needs for t in terms):
        return True
    return not any({"pairs", "scores"} & t.fn.needs for t in terms)


def _inputs(parts, data: tuple, sl: tuple[slice | None, ...], old_logp: Tensor | None, metrics: dict, seed: int,
            active: Tensor | None = None, whole: LossInputs | None = None) -> LossInputs:
    (batch, demos, pairs), (rs, ds, ps) = data, sl
    inp = LossInputs(seed=seed, whole=whole, max_tokens=parts.sampling.max_new_tokens)
    if pairs is not None and ps is not None:
        _pair_inputs(parts, inp, pairs, ps)
    if batch is not None and rs is not None and not _policy_reads_rows(parts):
        inp.mask, inp.rewards = batch.mask[rs], batch.rewards[rs]  # a reward-model stage: no policy forward
        _score_rows(parts, inp, batch, rs)
    elif batch is not None and rs is not None:
        logp, ent, fwd = _row_logprobs(parts, batch, rs, None if active is None else active[rs], old_logp)
        inp.logp, inp.entropy, inp.mask = logp, ent, batch.mask[rs]
        inp.advantages = batch.advantages[rs]
        inp.behav_logp = batch.old_logp[rs]
        inp.rewards = batch.rewards[rs]
        inp.group_reward_mean = group_stats(batch.rewards, batch.group_ids)[0][rs]
        for name in ("offpolicy", "prefix_mask", "teacher_logp"):
            value = getattr(batch, name)
            setattr(inp, name, None if value is None else value[rs])
        if parts.critic is not None:
            inp.values = parts.critic(batch.tokens[rs]) * inp.mask
            inp.old_values, inp.returns = batch.values[rs], batch.returns[rs]
        # Exactly on-policy (one pass): the old policy is the current one, ratio == 1.
        inp.old_logp = logp.detach() if old_logp is None else old_logp[rs]
        seen = inp.mask * fwd[:, None]  # tokens of forwarded rows
        if bool(fwd.any()):  # nothing forwarded: no entropy to report
            metrics["policy/entropy"].append(_mean_abs(ent, torch.zeros_like(ent), seen))
            if old_logp is None:  # engine vs trainer log-prob mismatch, for free on this path
                metrics["rollout/logprob_diff"].append(_mean_abs(inp.old_logp, batch.old_logp[rs], seen))
        inp.ref_logp = None if batch.ref_logp is None else batch.ref_logp[rs]
        if getattr(parts, "scorer", None) is not None:
            _score_rows(parts, inp, batch, rs)
    if demos is not None and ds is not None:
        dlp, dent, next_logp = token_distributions(parts.model, demos.tokens[ds])
        inp.demo_logp, inp.demo_entropy, inp.demo_mask = dlp, dent, demos.mask[ds]
        inp.demo_tokens = demos.tokens[ds]
        inp.demo_weights = None if demos.weights is None else demos.weights[ds]
        if "demo_dist" in parts.needs:  # only handed out when asked for, so the trace stays explicit
            inp.demo_next_logp = next_logp
        if "ref_demos" in parts.needs:
            inp.demo_ref_logp = _frozen_logp(parts.ref_model, demos.tokens[ds], demos.mask[ds], 1.0)
    return inp


def _score_rows(parts, inp: LossInputs, batch: RolloutBatch, rs: slice) -> None:
    """The scorer on the rollout rows, for the objectives reading it: token_scores [n, T] with
    the step labels for a process reward model (`prm`), scores [n] for an outcome one."""
    reads = [t.fn.needs for t in parts.terms if "rollout" in t.fn.needs and "scores" in t.fn.needs]
    if any("step_labels" in n for n in reads):
        inp.token_scores = parts.scorer.token_scores(batch.tokens[rs])
        inp.step_labels, inp.step_mask = batch.step_labels[rs], batch.step_mask[rs]
    if any("step_labels" not in n for n in reads):
        inp.scores = parts.scorer.score(batch.tokens[rs], batch.mask[rs])


def _row_logprobs(parts, batch: RolloutBatch, rs: slice, active: Tensor | None,
                  old_logp: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(logp [n, T] with grad, entropy [n, T], forwarded [n] float) of the rows rs.

    Rows with active False (advantage 0 everywhere, see `_active_rows`) skip the forward:
    their logp is the old policy's (so the ratio is 1), without gradient, and entropy 0.
    """
    tokens, mask = batch.tokens[rs], batch.mask[rs]
    prefix = None if batch.prefix_mask is None else batch.prefix_mask[rs]
    temp = parts.sampling.temperature
    if active is None or bool(active.all()):
        logp, ent = rollout_logprobs(parts.model, tokens, mask, temp, prefix)
        return logp, ent, torch.ones(len(mask), device=mask.device)
    idx = active.nonzero().squeeze(1)
    filler = (batch.old_logp if old_logp is None else old_logp)[rs].float()
    ent = torch.zeros_like(filler)
    if idx.numel() > 0:
        lp, e = rollout_logprobs(parts.model, tokens[idx], mask[idx], temp, None if prefix is None else prefix[idx])
        filler, ent = filler.index_copy(0, idx, lp), ent.index_copy(0, idx, e)
    return filler, ent, active.float()


def _active_rows(parts, batch: RolloutBatch | None, weights: dict[str, float]) -> Tensor | None:
    """Bool [N]: rows the update must forward, or None for all of them.

    A row whose advantage is 0 at every trained token adds exactly nothing to the loss or its
    gradient when every weighted objective reading rollouts is `inert_at_zero_advantage`
    (GRPO/DAPO/GSPO/CISPO policy terms; not kl, entropy, value or the hybrids), so it is not
    forwarded: in GRPO that is every group whose rewards are all equal. The aggregation still
    counts its tokens (it sees the whole [N, T] mask), so the loss is unchanged.
    """
    if batch is None or not parts.skip_inert_rows or parts.controller is not None or parts.critic is not None:
        return None
    if not all(inert_at_zero_advantage(t.fn) for t in parts.terms
               if weights[t.name] != 0.0 and "rollout" in t.fn.needs):
        return None
    active = ((batch.advantages != 0) & (batch.mask > 0)).any(1)
    return None if bool(active.all()) else active


def _micro_seed(seed: int, *index: int) -> int:
    """A reproducible seed per micro-batch of a step (epoch, minibatch, accumulation index), from the
    step seed alone: objectives that sample (otr) draw the same samples after an exact resume."""
    for i in index:
        seed = (seed * 1_000_003 + (i + 1) * 7919) % (2**31 - 1)
    return seed


def _mean_abs(a: Tensor, b: Tensor, mask: Tensor) -> float:
    return float(((a.detach() - b).abs() * mask).sum() / mask.sum().clamp(min=1))


def _frozen_logp(model, tokens: Tensor, mask: Tensor, temperature: float) -> Tensor:
    return frozen_logprobs(model, tokens, mask, temperature)


def _old_logp(parts, batch: RolloutBatch, active: Tensor | None) -> Tensor:
    """The policy's log-probs before this update's first optimizer step (PPO epochs > 1);
    rows that are not `active` keep the engine's (they are never compared to anything)."""
    temp = parts.sampling.temperature
    if active is None:
        return _frozen_logp(parts.model, batch.tokens, batch.mask, temp)
    idx = active.nonzero().squeeze(1)
    out = batch.old_logp.float().clone()
    if idx.numel() > 0:
        out[idx] = _frozen_logp(parts.model, batch.tokens[idx], batch.mask[idx], temp)
    return out


def _objective_sum(parts, inp: LossInputs, weights: dict[str, float], metrics: dict) -> Tensor:
    total = None
    for term in parts.terms:
        w = weights[term.name]
        if w == 0.0 and parts.controller is None:  # a controller reads every term's metrics
            continue
        if (("rollout" in term.fn.needs and inp.mask is None) or ("demos" in term.fn.needs and inp.demo_logp is None)
                or ("pairs" in term.fn.needs and inp.pair_mask is None)):
            continue  # this micro-batch holds no data for the term
        value, m = term.fn(inp)
        for k, v in m.items():
            metrics[k].append(v)
        total = w * value if total is None else total + w * value
    return total


def update_policy(parts, state: UpdateState, batch: RolloutBatch | None, demos: DemoBatch | None,
                  weights: dict[str, float], seed: int = 0, pairs: PairBatch | None = None) -> dict[str, float]:
    n_opt = parts.update_epochs * parts.minibatches
    active = _active_rows(parts, batch, weights)
    old_logp = None if n_opt == 1 or batch is None else _old_logp(parts, batch, active)
    metrics: dict[str, list[float]] = defaultdict(list)
    if batch is not None:
        metrics["perf/inert_rows_skipped"].append(0.0 if active is None else float((~active).float().mean()))
    if old_logp is not None:
        seen = batch.mask if active is None else batch.mask * active[:, None]
        metrics["rollout/logprob_diff"].append(_mean_abs(old_logp, batch.old_logp, seen))
    sizes = (len(batch.rewards) if batch is not None else 0, len(demos.problems) if demos is not None else 0,
             len(pairs.problems) if pairs is not None else 0)
    for epoch in range(parts.update_epochs):
        # Fewer rows (or demonstrations, or pairs) than minibatches give fewer slices: the others
        # pair with None rather than being cut off by zip (which silently never trained them).
        slices = [_slices(n, parts.minibatches) for n in sizes]
        for j, sl in enumerate(itertools.zip_longest(*slices)):
            _optimizer_step(parts, state, (batch, demos, pairs), sl, old_logp, weights, metrics,
                            _micro_seed(seed, epoch, j), active)
    out = {k: sum(v) / len(v) for k, v in metrics.items()}
    out["optim/bad_steps_total"] = float(state.bad_total)
    return out


def _sub(s: slice | None, k: int, i: int, keep_empty: bool = False) -> slice | None:
    """Piece i of k of the slice s (None when s has fewer than i + 1 rows, or an empty
    slice with `keep_empty`: a learner under FSDP2 forwards it, see dist/collective.py)."""
    if s is None:
        return None
    inner = _slices(s.stop - s.start, k)
    if i >= len(inner):
        return slice(s.stop, s.stop) if keep_empty else None
    return slice(s.start + inner[i].start, s.start + inner[i].stop)


def _merge_micro(metrics: dict, micro: dict) -> None:
    """Fold one optimizer step's micro-batch metrics into `metrics`: `loss/*` values are each
    micro-batch's share of the step's loss (the aggregations divide by whole-batch counts), so
    they are summed; the other metrics are per-micro-batch statistics, kept as they are."""
    for k, v in micro.items():
        if k.startswith("loss/"):
            metrics[k].append(sum(v))
        else:
            metrics[k].extend(v)


def _optimizer_step(parts, state, data: tuple, sl: tuple, old_logp, weights, metrics, seed: int,
                    active: Tensor | None = None) -> None:
    parts.optimizer.zero_grad(set_to_none=True)
    finite, graphless = True, False
    whole, micro = _whole(*data, sl), defaultdict(list)
    shard = getattr(parts, "shard", None)  # a learner of a group (dist/collective.py) or None
    k, mine = shard.pieces(parts.grad_accum) if shard else (parts.grad_accum, range(parts.grad_accum))
    keep_empty = bool(shard and shard.keep_empty)
    for i in mine:
        sub = tuple(_sub(s, k, i, keep_empty) for s in sl)
        if all(s is None for s in sub):
            continue
        inp = _inputs(parts, data, sub, old_logp, micro, _micro_seed(seed, i), active, whole)
        loss = _objective_sum(parts, inp, weights, micro)
        if loss is None:
            continue
        if not torch.isfinite(loss):
            finite = False
            if not keep_empty:  # under FSDP2 every rank must run the same backwards: NaN grads, skipped below
                break
        if loss.requires_grad:
            loss.backward()  # the micro-batch losses are shares of the step's loss: their sum is it
        else:
            graphless = True  # every row of the micro-batch was inert: its gradient is exactly 0
        micro["loss/total"].append(float(loss.detach()))
    _merge_micro(metrics, micro)
    params = [p for g in parts.optimizer.param_groups for p in g["params"] if p.requires_grad]
    if shard:  # the step's gradient is the sum of the ranks' (every rank joins, even after a NaN)
        finite, graphless = shard.reduce(params, finite, graphless)
    if graphless:  # AdamW must still see a zero gradient (moments decay), as without the skip
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    norm = torch.nn.utils.clip_grad_norm_(params, parts.grad_clip if parts.grad_clip > 0 else float("inf"))
    if not finite or not torch.isfinite(norm):
        parts.optimizer.zero_grad(set_to_none=True)  # NaN never reaches the weights
        state.bad_in_row += 1
        state.bad_total += 1
        metrics["optim/skipped"].append(1.0)
        return
    state.bad_in_row = 0
    metrics["optim/grad_norm"].append(float(norm))
    metrics["optim/skipped"].append(0.0)
    parts.optimizer.step()
    bump(parts.model)  # engines holding a copy of the weights (vLLM, Ray workers) reload them
