"""Scalar-head reward models: the policy's trunk plus a linear head read at the last token.

An outcome reward model (ORM) scores a whole completion: r(x, y) = w . h_L, h_L the final
hidden state at the completion's last trained token (its eos), as InstructGPT's RM
(Ouyang et al. 2022, arXiv:2203.02155) and `AutoModelForSequenceClassification` with one label
(the head has no bias, like transformers' `score` layer). A separate copy of the policy,
initialized from it when the stage starts, so training the RM never moves the policy.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def last_positions(mask: Tensor) -> Tensor:
    """[N]: the last position with mask > 0 of each row (the last column if none)."""
    t = mask.shape[1]
    idx = torch.arange(t, device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, idx, torch.full_like(idx, -1)).max(1).values
    return torch.where(last < 0, torch.full_like(last, t - 1), last)


class RewardScorer(nn.Module):
    """trunk (a copy of the policy) + head Linear(d_model, 1, bias=False), zero-initialized."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        device = next(policy.parameters()).device
        if getattr(policy, "is_hf", False):
            self.trunk = copy.deepcopy(policy)
        else:
            from rftkit.model.gpt import GPT

            self.trunk = GPT(policy.cfg).to(device)
            self.trunk.load_state_dict(policy.state_dict())
        self.head = nn.Linear(policy.cfg.d_model, 1, bias=False).to(device)
        nn.init.zeros_(self.head.weight)

    def score(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """tokens [N, T], mask [N, T] (1 on completion tokens) -> scores [N] (float32)."""
        hidden = self.trunk.hidden(tokens)
        last = last_positions(mask)
        picked = hidden[torch.arange(tokens.shape[0], device=tokens.device), last]
        return self.head(picked.to(self.head.weight.dtype)).squeeze(-1).float()


__all__ = ["RewardScorer", "last_positions"]
