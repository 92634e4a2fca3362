"""Sections of the config tree that live outside config.py (which holds the tree's spine):
test-time scaling in evaluation, the budgets of multi-turn episodes and the built-in VLM's encoder. `rftkit.config`
imports and re-exports them; read that module's docstring for how the tree is validated.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rftkit.errors import Bound


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VisionCfg(Strict):
    """The built-in VLM's patch encoder (rftkit/model/vision.py): its image tokens come before
    the prompt's text. Images of another size are resized to image_size."""

    image_size: int = Field(32, ge=4, le=512)
    patch: int = Field(8, ge=1)
    """Pixels per side of a patch: an image is (image_size / patch)^2 tokens."""
    d_vision: int = Field(96, ge=8)
    layers: int = Field(2, ge=0)
    heads: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _divisible(self) -> VisionCfg:
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} should be a multiple of patch {self.patch}")
        if self.d_vision % self.heads:
            raise ValueError(f"d_vision {self.d_vision} should be a multiple of heads {self.heads}")
        return self


class EpisodeCfg(Strict):
    """Multi-turn rollouts (rftkit/envs/episodes.py). Each budget ends an episode, counted in
    env/end/<reason> (the share of the step's episodes); none stops training."""

    max_turns: int = Field(4, ge=1)
    """Model turns per episode (one-turn tasks always take one)."""
    max_tokens: int = Field(0, ge=0)
    """Model-written tokens per episode; 0 = only max_turns x rollout.max_new_tokens."""
    max_obs_tokens: int = Field(64, ge=1)
    """An observation (tool result, game feedback) longer than this is cut (env/obs_truncated)."""
    timeout: float = Field(10.0, gt=0)
    """Seconds one env.step may take; past it the episode ends (env/env_timeouts_mean)."""
    workers: int = Field(8, ge=1)
    """env.step calls run at once (threads; tools run in their own processes or the sandbox)."""


class StepSearchCfg(Strict):
    width: int = Field(4, ge=1)
    expand: int = Field(4, ge=1)
    """Continuations sampled from each kept partial solution per step."""
    separator: str = Field(";", min_length=1)
    guide: Literal["prm", "verifier"] = "prm"
    """prm: eval.scaling.prm scores each step; verifier: the share of `rollouts` completions from it that verify."""
    rollouts: int = Field(4, ge=1)
    max_steps: int = Field(16, ge=1)


class ScalingCfg(Strict):
    """Test-time scaling in evaluation (docs/evaluation.md#test-time-scaling)."""

    reward_model: str | None = None
    """An outcome RM folder (reward_models/<stage> of this run, or a path): best-of-n, weighted voting."""
    prm: str | None = None
    """A process reward model folder: best-of-n by its minimum step score; guides step search."""
    curve: bool = True
    """Accuracy-vs-samples curves (k = 1, 2, 4, ..., n) for every selector."""
    beam_width: int = Field(0, ge=0)
    """Token-level beam search by the policy's log-prob with this many beams; 0 = off."""
    step_search: StepSearchCfg | None = None

    @model_validator(mode="after")
    def _prm_for_prm_search(self) -> ScalingCfg:
        if self.step_search is not None and self.step_search.guide == "prm" and self.prm is None:
            raise Bound("step_search.guide", "prm", "needs eval.scaling.prm (a process reward model folder); "
                                                    "or use guide: verifier")
        return self


class AsyncCfg(Strict):
    max_staleness: int = Field(0, ge=0, le=8)
    """Rollouts of steps t+1..t+K are generated while step t trains (one- and K-step off-policy,
    as AReaL and verl do); 0 is the synchronous loop. See docs/distributed.md."""


class DistCfg(Strict):
    """Scale-out (rftkit/dist/, docs/distributed.md). All zeros: one process, as before.

    `rollout_workers` Ray actors each hold a copy of the policy and a generation engine
    (`rollout.engine`); `reward_workers` run verifiers as Ray tasks; `learners` processes train
    with torch.distributed (`strategy` ddp: replicated weights, summed gradients; fsdp2:
    `torch.distributed.fsdp.fully_shard`). The driver runs the same loop and keeps the weights
    the engines, the evaluation and the checkpoints read."""

    rollout_workers: int = Field(0, ge=0)
    reward_workers: int = Field(0, ge=0)
    learners: int = Field(0, ge=0)
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend of the learners: auto = nccl on CUDA devices, gloo on CPU."""
    address: str | None = None
    """Ray cluster to join: None starts a local one; "auto" or "host:port" joins a running one
    (`ray start --head` on the first machine, `ray start --address=<head>:6379` on the others)."""
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    """GPUs each rollout worker and learner asks Ray for (0 on CPU)."""
    collective_timeout: float = Field(600.0, gt=0)
    """Seconds a learner waits in a collective before the group is declared broken."""
    async_: AsyncCfg = Field(default_factory=AsyncCfg, alias="async")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @property
    def enabled(self) -> bool:
        return bool(self.rollout_workers or self.reward_workers or self.learners)
