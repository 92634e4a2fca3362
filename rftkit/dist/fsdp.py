"""FSDP2 for a learner (`dist.strategy=fsdp2`): `torch.distributed.fsdp.fully_shard` on the policy.

Each repeated block (every module inside an `nn.ModuleList` of two or more: the transformer
layers of the built-in GPT and of HF models) is one FSDP unit, and the policy root holds the
rest (embeddings, final norm, head). FSDP averages the gradients over ranks; the learner
multiplies them by the world size, for the sum our loss shares need (dist/collective.py; a
divide factor of 1 would need ReduceOp.PREMUL_SUM, which gloo lacks). The reference, critic and reward head stay whole
on every rank (they are small or frozen; the critic's and head's gradients are all-reduced).

The optimizer is rebuilt over the sharded parameters with the same groups, and the driver's
moments (a resumed stage) are distributed onto them, so a stage resumed under FSDP2 continues
from the same state. `full_optimizer_state` gathers the moments back to full tensors in
the layout of the driver's optimizer, for its checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn


def _units(model: nn.Module) -> list[nn.Module]:
    return [m for lst in model.modules() if isinstance(lst, nn.ModuleList) and len(lst) > 1 for m in lst]


def shard_parts(parts) -> None:
    """Shard parts.model in place and rebuild parts.optimizer over its new parameters."""
    from torch.distributed.fsdp import fully_shard

    owners = {"model": parts.model, "critic": parts.critic, "scorer": parts.scorer}
    names = {id(p): (o, n) for o, m in owners.items() if m is not None for n, p in m.named_parameters()}
    old = parts.optimizer
    old_state = old.state_dict()
    for unit in _units(parts.model):
        fully_shard(unit)
    fully_shard(parts.model)  # FSDP averages gradients over ranks; Shard.reduce multiplies them back to the sum
    new = {(o, n): p for o, m in owners.items() if m is not None for n, p in m.named_parameters()}
    groups = []
    for g in old.param_groups:
        groups.append({**{k: v for k, v in g.items() if k != "params"},
                       "params": [new[names[id(p)]] for p in g["params"]]})
    parts.optimizer = type(old)(groups)
    parts.optimizer.load_state_dict(_distributed_state(old_state, parts.optimizer))
    parts.skip_inert_rows = False  # every rank must forward every piece (the forwards are collectives)


def _distributed_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A plain optimizer state dict with each per-parameter tensor laid out like its (sharded) parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    out = {"param_groups": state["param_groups"], "state": {}}
    for idx, s in state["state"].items():
        p = params[int(idx)]
        out["state"][idx] = {k: distribute_tensor(v, p.device_mesh, p.placements)
                             if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v
                             for k, v in s.items()}
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with full tensors (a collective for DTensors: call on every rank)."""
    sd = optimizer.state_dict()  # its per-parameter dicts are the optimizer's own: build new ones
    sd["state"] = {idx: {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in s.items()}
                   for idx, s in sd["state"].items()}
    return sd
