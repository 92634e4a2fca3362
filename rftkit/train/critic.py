"""The value model for PPO with GAE (ReFT, PPO-RLHF): the policy's trunk plus a scalar head.

A separate copy of the policy, as verl's critic (initialized from the policy at the start of
the stage), so the value loss never moves the policy's weights. values[:, t] is V of the
prefix tokens[:, :t], i.e. the state before token t, aligned like `token_logprobs`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rftkit.model.gpt import GPT


class Critic(nn.Module):
    def __init__(self, policy: GPT) -> None:
        super().__init__()
        if getattr(policy, "is_hf", False):  # a trainable copy of the HF policy (with LoRA: base + adapters)
            import copy

            self.trunk = copy.deepcopy(policy)
        else:
            self.trunk = GPT(policy.cfg).to(next(policy.parameters()).device)
            self.trunk.load_state_dict(policy.state_dict())
        self.head = nn.Linear(policy.cfg.d_model, 1).to(next(policy.parameters()).device)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [N, T] -> values [N, T] (position 0 is 0: no state precedes the first token)."""
        v = self.head(self.trunk.hidden(tokens[:, :-1])).squeeze(-1).float()
        return torch.cat([v.new_zeros(tokens.shape[0], 1), v], 1)
