"""Weight versions of a policy, for engines that hold their own copy of it.

Our engine (`kv`) reads the policy module itself, so it always samples from the current
weights. vLLM and Ray rollout workers hold a copy: they compare `version(model)` with the
version they last loaded and sync when it moved. The update bumps it after every optimizer
step, and so does anything else that writes the weights in place (a checkpoint load).
"""

from __future__ import annotations

_ATTR = "_rftkit_weights_version"


def version(model) -> int:
    """How many times the weights of `model` were written in place (0 for a fresh module)."""
    return getattr(model, _ATTR, 0)


def bump(model) -> None:
    """Mark the weights of `model` as changed: engines holding a copy reload them before sampling."""
    object.__setattr__(model, _ATTR, version(model) + 1)
