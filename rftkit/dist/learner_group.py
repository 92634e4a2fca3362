"""The driver's side of the learner group (dist/learners.py has the learners themselves)."""

from __future__ import annotations

from collections import defaultdict

import torch

from rftkit.dist.learners import Learner, LearnerDied, LearnerParts, load_trainable


def backend_for(cfg) -> str:
    """dist.backend, with auto = nccl on a CUDA model device, gloo otherwise."""
    if cfg.dist.backend != "auto":
        return cfg.dist.backend
    return "nccl" if str(cfg.model.device).startswith("cuda") else "gloo"


class LearnerGroup:
    """`dist.learners` Ray actors joined in one torch.distributed group, fed every step."""

    def __init__(self, parts, cfg, update_fn) -> None:
        import ray

        from rftkit.dist.cluster import ensure_ray

        ensure_ray(cfg.dist)
        d = cfg.dist
        actor = ray.remote(num_cpus=d.cpus_per_worker, num_gpus=d.gpus_per_worker, max_restarts=0)(Learner)
        threads = cfg.model.threads or torch.get_num_threads()
        self.workers = [actor.remote(r, d.learners, d.strategy, threads, update_fn) for r in range(d.learners)]
        self.parts = parts
        try:
            init = ray.get(self.workers[0].address.remote())
            self._all(lambda w: w.join.remote(init, backend_for(cfg), d.collective_timeout))
            ref = ray.put(LearnerParts.of(parts))  # weights and optimizer moments as the driver has them
            self._all(lambda w: w.load.remote(ref))
        except Exception:
            self.close()
            raise

    def _all(self, call) -> list:
        import ray

        try:
            return ray.get([call(w) for w in self.workers])
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            n = len(self.workers)
            self.close()
            lines = [x for x in str(e).splitlines() if x.strip()]
            raise LearnerDied(f"a learner of the group (dist.learners={n}) failed: "
                              f"{type(e).__name__}: {lines[-1].strip() if lines else ''}; the last "
                              f"checkpoint is intact: continue with `rftkit run ... --resume`") from None

    def pids(self) -> list[int]:
        return self._all(lambda w: w.pid.remote())

    def update(self, state, batch, demos, weights: dict, seed: int, pairs, lr: float) -> dict[str, float]:
        """One step's update on every learner; the driver's weights become rank 0's. Returns the
        merged metrics: `loss/*` summed over ranks (each rank's are shares of the step's loss),
        the rest averaged."""
        import ray

        refs = [ray.put(x) for x in (batch, demos, pairs)]
        results = self._all(lambda w: w.update.remote(state, *refs[:2], weights, seed, refs[2], lr))
        new_state, tensors = results[0][1], results[0][2]
        state.bad_in_row, state.bad_total = new_state.bad_in_row, new_state.bad_total
        load_trainable(self.parts, tensors)
        return merge_metrics([m for m, _, _ in results])

    def pull_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Rank 0's optimizer state into the driver's (what a checkpoint saves)."""
        optimizer.load_state_dict(self._all(lambda w: w.optimizer_state.remote())[0])

    def close(self) -> None:
        import ray

        for w in getattr(self, "workers", []):
            try:
                ray.kill(w)
            except Exception:  # already dead: nothing to stop
                pass
        self.workers = []


def merge_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """`loss/*`: sums over ranks (shares of one loss); other keys: means over the ranks having them."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for m in per_rank:
        for k, v in m.items():
            sums[k] += v
            counts[k] += 1
    return {k: v if k.startswith("loss/") else v / counts[k] for k, v in sums.items()}
