"""Process supervision: a reward per reasoning step rather than per completion.

A completion's steps are the pieces between occurrences of a step separator (";" in the
built-in tasks' scratchpad traces, "8+7=15;5+6+1=12;#125"); the final answer is the last step.
A step's position is the token index of its last token: the separator's token, or the last
trained token (eos) for the last step. Tensors: step_mask [N, T] (1 at step ends),
step_labels [N, T] (a label at step ends), token_scores [N, T] (a scorer's logit everywhere).

    step_ends(pieces, separator)      -> token indices of step ends, whether the separator occurs
    prm               (objective)     Math-Shepherd PRM loss: BCE at step ends (soft labels)
    process_rewards   (transform)     PRM step scores as token rewards at step ends
    grpo_process      (advantage)     DeepSeekMath process supervision: group-normalized step
                                      rewards, each token's advantage the sum of the later ones

Sources: Wang et al. 2023, "Math-Shepherd" (arXiv:2312.08935), and Shao et al. 2024,
"DeepSeekMath" (arXiv:2402.03300), section 4.1.3. The labels themselves (Monte Carlo
completions from each step prefix) are made by the step: rftkit/train/prm_labels.py.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rftkit.algos.advantages import estimator, token_rewards
from rftkit.algos.objectives import LossInputs, objective
from rftkit.algos.shaping import REWARD_TRANSFORMS, RewardBatch, Shaped

DEFAULT_SEPARATOR = ";"
"""What the built-in tasks' scratchpad traces write between steps (arithmetic, strings)."""


def step_ends(pieces: list[str], separator: str) -> tuple[list[int], bool]:
    """Indices into `pieces` (one decoded string per completion token) of each step's last
    token, and whether `separator` occurs at all. A step ends at the token holding the last
    character of a separator; the last step ends at the last token. Text after the last
    separator that is only whitespace (or nothing, e.g. an eos) joins the step before it,
    whose end moves to the last token. No separator: one step, the whole completion.
    """
    if not separator:
        raise ValueError("the step separator must be a non-empty string")
    if not pieces:
        return [], False
    text = "".join(pieces)
    cum = list(itertools.accumulate(len(p) for p in pieces))  # characters through token t
    ends, start = [], 0
    while (k := text.find(separator, start)) >= 0:
        start = k + len(separator)
        ends.append(min(bisect.bisect_right(cum, start - 1), len(pieces) - 1))
    found, last = bool(ends), len(pieces) - 1
    ends = sorted(set(ends))
    if ends and not text[start:].strip():
        ends[-1] = last
    elif not ends or ends[-1] != last:
        ends.append(last)
    return ends, found


def group_step_norm(step_rewards: Tensor, steps: Tensor, group_ids: Tensor, eps: float) -> Tensor:
    """(r - mean(R)) / (std(R) + eps) at step ends, R = every step reward of every output of
    the row's group (unbiased std, as `grpo`; a set of one has std 0). 0 off the steps.
    Shapes: step_rewards [N, T], steps [N, T] (1 at step ends), group_ids [N] -> [N, T]."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    k = int(inv.max()) + 1
    r = step_rewards.float() * steps
    count = r.new_zeros(k).index_add_(0, inv, steps.sum(1))
    mean = r.new_zeros(k).index_add_(0, inv, r.sum(1)) / count.clamp(min=1)
    dev = (step_rewards.float() - mean[inv][:, None]) * steps
    sq = r.new_zeros(k).index_add_(0, inv, (dev ** 2).sum(1))
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    return dev / (std[inv][:, None] + eps)


@estimator("grpo_process", needs={"prm"}, group_relative=True)
def grpo_process_advantages(rewards: Tensor, group_ids: Tensor, mask: Tensor, values: Tensor | None = None,
                            greedy_rewards: Tensor | None = None, step_mask: Tensor | None = None, *,
                            eps: float = 1e-6) -> tuple[Tensor, None]:
    """GRPO with process supervision (DeepSeekMath, arXiv:2402.03300, section 4.1.3).

    The step rewards r_i^{index(j)} of all G outputs of a group form one set R; each is
    normalized r~ = (r - mean(R)) / std(R) (+ eps here; std unbiased, as `grpo`), and the
    advantage of token t of output i is sum_{index(j) >= t} r~_i^{index(j)}: the normalized
    rewards of the steps ending at or after t. `rewards` [N, T] holds the step rewards at the
    step ends (`process_rewards`); `step_mask` [N, T] says where the steps end, so a step
    rewarded 0 is still a step of R. Marked `group_relative` (the paper's baseline is the
    group; with groups of one and one step each it gives 0). Without a step mask each row is
    one step ending at its last trained token, and an [N] reward sits there: that is
    outcome-supervised GRPO (section 4.1.2). The config check
    (`train/build.py`) makes a stage list `process_rewards` last with this estimator.
    Shapes: rewards [N] or [N, T], group_ids [N], mask [N, T], step_mask [N, T] -> [N, T].
    """
    steps = token_rewards(torch.ones(mask.shape[0]), mask) if step_mask is None else step_mask.float() * (mask > 0)
    norm = group_step_norm(token_rewards(rewards, mask), steps, group_ids, eps)
    return torch.flip(torch.cumsum(torch.flip(norm, [-1]), -1), [-1]) * mask, None


@REWARD_TRANSFORMS.register("process_rewards", needs={"prm"}, token_level=True)
def process_rewards(rewards: Tensor, batch: RewardBatch, *, outcome: float = 0.0) -> Shaped:
    """Token rewards [N, T]: the process reward model's score sigmoid(logit) in (0, 1) at
    each step's end, 0 elsewhere (DeepSeekMath process supervision); `outcome` > 0 adds
    outcome * the verifier's reward at the last trained token (0 = the paper: PRM only).
    The PRM is the stage's `prm` folder; its model.json names the separator. Metrics:
    prm/step_score (mean over steps), prm/solution_score (Math-Shepherd's min over a
    completion's steps, mean over rows)."""
    steps = batch.step_mask * (batch.mask > 0)
    out = batch.step_scores.float() * steps
    if outcome:
        out = out + outcome * token_rewards(rewards, batch.mask)
    with torch.no_grad():
        has = steps.sum(1) > 0
        low = torch.where(steps > 0, batch.step_scores.float(), torch.ones_like(out)).min(1).values
        metrics = {"prm/step_score": float((batch.step_scores * steps).sum() / steps.sum().clamp(min=1)),
                   "prm/solution_score": float(low[has].mean()) if bool(has.any()) else 0.0}
    return Shaped(out, batch.mask, metrics)


@objective("prm", needs={"rollout", "scores", "step_labels"})
def prm_objective(inp: LossInputs, *, separator: str = DEFAULT_SEPARATOR, rollouts: int = 8,
                  label: Literal["soft", "hard"] = "soft") -> tuple[Tensor, dict]:
    """Math-Shepherd PRM loss (arXiv:2312.08935): binary cross-entropy at each step's end,
    -[y log r + (1 - y) log(1 - r)], r = sigmoid(token_scores) at the step's last token.

    The knobs set the labels the step computes for this objective (rftkit/train/prm_labels.py):
    `separator` splits completions into steps; from each step prefix `rollouts` completions
    are sampled and y = the fraction with a correct answer ("soft", the paper's soft
    estimation) or 1 if any is ("hard"); the last step's label is the completion's own
    correctness. N = 8 is our default; the paper's value was not confirmed here. Mean over
    the whole optimizer step's steps. Reads token_scores, step_labels, step_mask [N, T].
    """
    missing = [n for n in ("token_scores", "step_labels", "step_mask") if getattr(inp, n) is None]
    if missing:
        raise ValueError(f"objective 'prm' needs LossInputs.{', LossInputs.'.join(missing)}")
    if rollouts < 1:
        raise ValueError(f"prm: rollouts must be >= 1, got {rollouts}")
    m = inp.step_mask.float()
    y = inp.step_labels.float()
    per = F.binary_cross_entropy_with_logits(inp.token_scores, y, reduction="none") * m
    whole = inp.whole.step_mask if inp.whole is not None and inp.whole.step_mask is not None else m
    loss = per.sum() / whole.sum().clamp(min=1)
    with torch.no_grad():
        n = m.sum().clamp(min=1)
        acc = (((inp.token_scores > 0) == (y > 0.5)).float() * m).sum() / n
        return loss, {"loss/prm": float(loss.detach()), "prm/step_accuracy": float(acc),
                      "prm/label_mean": float((y * m).sum() / n)}


__all__ = ["DEFAULT_SEPARATOR", "group_step_norm", "grpo_process_advantages", "process_rewards", "prm_objective",
           "step_ends"]
