"""Policy entropy of sampled completions: the one evaluation metric that needs the model.

`policy_entropy(model, generation, temperature)` is the mean, over every generated token of
every sample, of the entropy of the policy's next-token distribution (at the sampling
temperature) at that position, in nats. It reuses the trainer's `token_logprobs`
(rftkit/model/logprobs.py). `evaluate(..., model=policy)` calls it on its sampled
completions and adds the `entropy` key; the training loop passes `model=run.model`
(docs/evaluation.md).
"""

from __future__ import annotations

import torch

from rftkit.model.logprobs import rows_per_chunk, token_logprobs
from rftkit.types import Generation


@torch.no_grad()
def policy_entropy(model, generation: Generation, temperature: float = 1.0, batch_size: int = 0) -> float:
    """Mean token entropy (nats) of `model` over the generated tokens of `generation`.

    Rows are scored in chunks of `batch_size` (0: as many as keep the logits within 512 MB)
    in eval mode (the model's mode is restored);
    no random numbers are drawn, so calling it never changes a run's RNG stream.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    batch_size = batch_size or min(64, rows_per_chunk(model, generation.tokens))
    try:
        for lo in range(0, generation.tokens.shape[0], batch_size):
            tokens = generation.tokens[lo : lo + batch_size].to(device)
            mask = generation.mask[lo : lo + batch_size].to(device).float()
            _, ent = token_logprobs(model, tokens, temperature=temperature if temperature > 0 else 1.0)
            total += float((ent * mask).sum())
            count += float(mask.sum())
    finally:
        model.train(was_training)
    return total / count if count else 0.0
