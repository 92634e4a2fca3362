"""The driver's wiring of `dist.*`: which engine a stage samples with, who runs its update.

    services = StageServices(cfg, parts, steps, seed_of, update_policy, rollout)   # after a resume's load
    metrics = run_step(parts, ..., prefetch=services.prefetch(stage_step))
    services.close()

With every `dist` key at 0 this is the one-process loop: the in-process engine, the update in
the driver, no Ray. The loop (train/loop.py) stays the same loop either way: `parts.generator`
is a Generator (in-process, or a Ray `RolloutService` with the same protocol) and
`parts.learners` an update service, or None.
"""

from __future__ import annotations

from rftkit.rollout.base import GENERATORS


def make_generator(cfg, model, tok):
    """The engine `rollout.engine` over `model`: in this process, or on `dist.rollout_workers` Ray actors."""
    if cfg.dist.rollout_workers:
        from rftkit.dist.rollout_workers import RolloutService

        return RolloutService(cfg.rollout.engine, model, tok, cfg.dist, threads=cfg.model.threads)
    return GENERATORS.bind(cfg.rollout.engine)(model, tok)


class StageServices:
    """The rollout service, the learner group and the prefetcher of one stage."""

    def __init__(self, cfg, parts, steps: int, seed_of, update_fn, rollout_fn) -> None:
        """update_fn, rollout_fn: train's `update_policy` and `rollout` (dist stands below train)."""
        self.parts, self.prefetcher = parts, None
        try:
            if cfg.dist.learners:
                from rftkit.dist.learner_group import LearnerGroup

                parts.learners = LearnerGroup(parts, cfg, update_fn)
            k = cfg.dist.async_.max_staleness
            if k and "rollout" in parts.needs:
                from rftkit.dist.async_rollout import Prefetcher

                _close(parts.generator)  # the main thread no longer samples: the rollout thread's engine does
                self.prefetcher = Prefetcher(parts, k, lambda m: make_generator(cfg, m, parts.tok), steps,
                                             cfg.checkpoint.every, seed_of, rollout_fn)
                parts.generator = self.prefetcher.copy.generator
        except Exception:
            self.close()
            raise

    def prefetch(self, stage_step: int) -> tuple | None:
        return None if self.prefetcher is None else (self.prefetcher, stage_step)

    def metrics(self) -> dict[str, float]:
        """Counters of the services (worker restarts), logged with each step."""
        out: dict[str, float] = {}
        if hasattr(self.parts.generator, "metrics"):
            out.update(self.parts.generator.metrics())
        return out

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()  # closes its engine, which is parts.generator
            self.prefetcher = None
        else:
            _close(self.parts.generator)
        if self.parts.learners is not None:
            self.parts.learners.close()
            self.parts.learners = None


def _close(generator) -> None:
    """Stop an engine's workers (Ray actors, a vLLM instance); in-process engines have nothing to stop."""
    close = getattr(generator, "close", None)
    if close is not None:
        close()
