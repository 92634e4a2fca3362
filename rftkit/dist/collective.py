"""What one learner of a group does differently inside the update (train/update.py).

A learner group splits every optimizer step's micro-batches between its ranks: with L
learners and `optim.grad_accum` A, the step's slice of the batch is cut into L x A pieces
and rank r runs pieces r*A .. r*A + A - 1. The objectives' normalizers are the whole step's
(`update._whole`), so each piece's loss is a share of the step's loss, and the step's
gradient is the SUM of the ranks' gradients; every rank then clips and steps the same
summed gradient, so the replicas stay equal. That is data parallelism as
DistributedDataParallel does it (there: a mean of per-rank mean losses), done with one
`all_reduce` per optimizer step because our losses are already shares of the global one.

Under FSDP2 (`torch.distributed.fsdp.fully_shard`) the policy's parameters are DTensors
whose gradients FSDP reduce-scatters in backward as a mean over ranks, multiplied back to the
sum here; only the plain parameters (a critic, a reward head) are all-reduced here. FSDP's collectives run
inside forward and backward, so every rank must run the same forwards: empty pieces are
forwarded as zero-row inputs (`Shard.keep_empty`) rather than skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


@dataclass
class Shard:
    """This process's place in a learner group: rank of world, and the strategy."""

    rank: int
    world: int
    strategy: str = "ddp"

    @property
    def keep_empty(self) -> bool:
        """Whether an empty piece is still forwarded (FSDP2: the forwards are collectives)."""
        return self.strategy == "fsdp2"

    def pieces(self, accum: int) -> tuple[int, range]:
        """(pieces per optimizer step, this rank's piece indices)."""
        return accum * self.world, range(self.rank * accum, (self.rank + 1) * accum)

    def reduce(self, params: list[torch.Tensor], finite: bool, graphless: bool) -> tuple[bool, bool]:
        """Sum the ranks' gradients in place; returns (finite everywhere, graphless anywhere).

        A parameter gets a gradient when some rank produced one (zeros stand in elsewhere), so
        a parameter no rank touched keeps grad None, as in one process (AdamW skips it).
        """
        flags = torch.tensor([float(finite), float(graphless)] + [float(p.grad is not None) for p in params])
        # MIN of finite and MAX of the rest, with one collective: negate finite, reduce MAX
        flags[0] = -flags[0]
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        finite_all, graphless_any = bool(-flags[0] > 0), bool(flags[1] > 0)
        if not finite_all:
            return False, graphless_any
        for p in params:
            if isinstance(p, DTensor) and p.grad is not None:
                p.grad.mul_(self.world)  # FSDP's reduce-scatter averaged: back to the sum
        plain = [p for p, f in zip(params, flags[2:].tolist()) if f > 0 and not isinstance(p, DTensor)]
        for p in plain:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if plain:
            flat = torch.cat([p.grad.reshape(-1) for p in plain])
            dist.all_reduce(flat)
            offset = 0
            for p in plain:
                n = p.numel()
                p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
                offset += n
        return True, graphless_any
