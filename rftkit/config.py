"""One typed config tree: YAML recipes, dotted CLI overrides, validation with helpful errors.

Pydantic models with `extra="forbid"` give types and coercion; this module only adds the
things pydantic does not do: dotted overrides (`stages.rl.steps=50`, lists indexed by
position or by an element's `name`) and error messages (worded in `rftkit.errors`) that name
the key as typed, the value given, what was expected and the closest valid key. Bounds are
Field constraints and validators here, so each bound has one place and one wording; the few
that need built parts are in `train.build` (`check_bounds`: an estimator's `group_relative`
mark, rows per minibatch; `check_prompts_fit`: prompt lengths). Parts receive plain
arguments built from these objects, never the objects themselves. Registered
parts are configured by `{name, params}`; their params are checked against the part's
keyword-only signature (`Registry.bind`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from rftkit.config_moved import moved_message
from rftkit.config_parts import DistCfg, EpisodeCfg, ScalingCfg, Strict, VisionCfg
from rftkit.errors import Bound, ConfigError, format_validation_error

Count = Annotated[int, Field(ge=1)]


class PartCfg(Strict):
    """A registered part by name, with its keyword-only knobs."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelCfg(Strict):
    size: str = "micro"
    """Built-in model size (nano ~0.45M, micro ~1.8M, mini ~14M parameters)."""
    max_seq_len: int = Field(128, ge=1)
    """Context of the built-in model: the longest prompt plus max_new_tokens must fit."""
    init: str | None = None
    """Start from these weights: a run dir, a checkpoint dir or a models/<stage> dir."""
    device: str = "cpu"
    threads: int = Field(0, ge=0)
    """torch intra-op threads; 0 keeps torch's default (one per core)."""
    path: str | None = None
    """A local Hugging Face causal-LM folder (hub names need network); replaces size/max_seq_len."""
    dtype: str = "auto"
    """HF models: auto | float32 | bfloat16 | float16 | bf16-mixed."""
    lora: dict[str, Any] | None = None
    """HF models: PEFT LoraConfig fields ({r: 16, lora_alpha: 32}); null = full fine-tuning."""
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    system_prompt: str | None = None
    chat_template: bool | Literal["auto"] = "auto"
    vision: VisionCfg | None = None
    """The built-in model as a VLM: a patch encoder whose image tokens precede the text."""
    train_vision: bool = False
    """HF vision-language models (model.path): train the vision tower too (frozen by default);
    the built-in VLM always trains its encoder, so it is an error without model.path."""

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str) -> str:
        from rftkit.model.gpt import SIZES  # the one list of sizes; torch is needed next anyway

        if size not in SIZES:
            raise ValueError(f"should be one of {', '.join(SIZES)}")
        return size


class TaskCfg(Strict):
    name: str
    label: str | None = None
    """Source label of its problems (default: the task name); stages and curricula select by it."""
    weight: float = Field(1.0, ge=0)
    """Share of the training pool drawn from this task."""
    difficulty: tuple[int, int] | None = None
    """In-distribution difficulty range (inclusive); None = the task's default."""
    ood_difficulty: tuple[int, int] | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("difficulty", "ood_difficulty")
    @classmethod
    def _low_to_high(cls, rng: tuple[int, int] | None) -> tuple[int, int] | None:
        if rng is not None and rng[0] > rng[1]:
            raise ValueError("should be a range [low, high] with low <= high")
        return rng


class DataCfg(Strict):
    tasks: list[TaskCfg] = Field(default_factory=lambda: [TaskCfg(name="arithmetic")])
    train_size: int = Field(20000, ge=1)
    """Training pool size (prompts), split across tasks by weight; test prompts excluded."""
    test_size: int = Field(200, ge=0)
    """Held-out in-distribution problems per task."""
    ood_size: int = Field(200, ge=0)
    """Out-of-distribution (harder) problems per task."""


class RolloutCfg(Strict):
    engine: str = "kv"
    group_size: int = Field(8, ge=1)
    """Rollouts per prompt; group-relative estimators (grpo, rloo...) need at least 2."""
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, ge=0)
    """0 = greedy."""
    top_k: int = Field(0, ge=0)
    """0 = off."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling, in (0, 1]; 1 = off."""
    stop: list[str] = Field(default_factory=list)
    episode: EpisodeCfg = Field(default_factory=EpisodeCfg)
    """Budgets of multi-turn rollouts (problems whose task names an environment)."""


class ObjectiveCfg(Strict):
    name: str
    weight: float | PartCfg = 1.0
    """A constant, or a schedule `{name: cosine, params: {start: 1, end: 0}}` over the stage."""
    params: dict[str, Any] = Field(default_factory=dict)


class StageRolloutCfg(Strict):
    """The rollout half of an RL stage, as registered parts (train/step.py runs them):
    `groups`: the group layout (rows per prompt: on_policy, prefix_rft, demo_rows);
    `resample`: resamplers applied in order to each round of groups (dynamic_sampling,
    ghpo_hints); `rewards`: reward transforms applied in order after verification
    (dapo_overlong, mask_truncated, length_penalty, kl_penalty)."""

    groups: PartCfg = Field(default_factory=lambda: PartCfg(name="on_policy"))
    policy: Literal["current", "reference"] = "current"
    """Which model samples the rollouts: the policy in training (on-policy RL, online DPO) or
    the frozen reference, the model the stage starts from (offline data: its distribution does
    not move with the policy, as offline DPO's pairs, A-LoL's and CoPG's data)."""
    resample: list[PartCfg] = Field(default_factory=list)
    rewards: list[PartCfg] = Field(default_factory=list)


class RLCfg(Strict):
    """Loop-level settings of RL stages that are not parts."""

    ref_reset_every: int = Field(0, ge=0)
    """Reset the reference policy to the current one every N steps (ProRL); 0 = never."""
    critic_lr: float = Field(1e-4, gt=0)
    """Learning rate of the value model (only when an objective or estimator needs values)."""
    skip_inert_rows: bool = True
    """Leave rows whose advantage is 0 at every token out of the training forward when every
    objective reading rollouts gives them zero loss and gradient (e.g. GRPO's all-equal groups
    without a KL or entropy term). The update is unchanged; `policy/entropy` and
    `rollout/logprob_diff` then cover the forwarded rows only."""


class StageCfg(Strict):
    name: str
    steps: int = Field(ge=0)
    """0 = no training: the stage only saves and evaluates the model it starts from."""
    tasks: list[str] | None = None
    """Train on these task labels of data.tasks only (None = all); evaluation covers all."""
    batch_size: int = Field(32, ge=1)
    """Prompts per step (each rolled out group_size times when a rollout is needed)."""
    objectives: list[ObjectiveCfg]
    advantage: PartCfg = Field(default_factory=lambda: PartCfg(name="grpo"))
    sampler: PartCfg = Field(default_factory=lambda: PartCfg(name="uniform"))
    demos: PartCfg = Field(default_factory=lambda: PartCfg(name="task"))
    """Where demonstrations come from (for objectives that use them)."""
    pairs: PartCfg = Field(default_factory=lambda: PartCfg(name="dataset"))
    """Where preference pairs come from (dpo, ipo, bradley_terry...): `dataset` (each problem's
    chosen / rejected) or `group` (online: best vs worst of each rollout group)."""
    lr: float | None = Field(None, gt=0)
    """Overrides optim.lr for this stage."""
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    update_epochs: int = Field(1, ge=1)
    """Passes over one rollout batch (PPO epochs); old log-probs are cached."""
    minibatches: int = Field(1, ge=1)
    """Optimizer steps per epoch, each on a slice of the batch (at most one per row)."""
    rollout: StageRolloutCfg = Field(default_factory=StageRolloutCfg)
    rl: RLCfg = Field(default_factory=RLCfg)
    controller: PartCfg | None = None
    """Sets objective weights each step from training signals (sasr, amft); None = schedules only."""
    teacher: str | None = None
    """A model folder or run dir whose log-probs objectives needing "teacher" read (KDRL)."""
    prm: str | None = None
    """A PRM folder (e.g. reward_models/prm, from the run dir) that parts needing "prm" read."""

    @model_validator(mode="before")
    @classmethod
    def _old_rl_flags(cls, data: Any) -> Any:
        rl = data.get("rl") if isinstance(data, dict) else None
        if isinstance(rl, dict) and (msg := moved_message(rl)):
            raise Bound("rl", {k: v for k, v in rl.items()}, msg)
        return data


class OptimCfg(Strict):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0)
    """Max global gradient norm; 0 = no clipping."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step: memory only; each aggregation divides by the whole
    step's counts and the micro-batch losses are summed, so the update does not change."""
    max_bad_steps: int = Field(5, ge=0)
    """Abort after this many consecutive non-finite loss/gradient steps (each is skipped)."""


class EvalCfg(Strict):
    every: int = Field(0, ge=0)
    """Evaluate every N steps within a stage; 0 = only at the end of each stage."""
    n_samples: int = Field(16, ge=1)
    ks: list[Count] = Field(default_factory=lambda: [1, 4, 16])
    """pass@k / maj@k for these k, each at most n_samples."""
    temperature: float = Field(1.0, ge=0)
    splits: list[Literal["test", "ood"]] = Field(default_factory=lambda: ["test", "ood"], min_length=1)
    max_new_tokens: int | None = Field(None, ge=1)
    """None = rollout.max_new_tokens."""
    scaling: ScalingCfg | None = None
    """Test-time scaling: best-of-n by RM / PRM / log-prob, weighted voting, curves, searches."""

    @model_validator(mode="after")
    def _k_within_samples(self) -> EvalCfg:
        if any(k > self.n_samples for k in self.ks):
            raise Bound("ks", self.ks, f"each k should be at most eval.n_samples ({self.n_samples}): "
                                       f"pass@k draws k of the n samples")
        return self


class CheckpointCfg(Strict):
    every: int = Field(50, ge=1)
    """Save every N steps of a stage (and at each stage's end)."""
    keep: int = Field(2, ge=1)
    """Newest checkpoints kept on disk (the one just written counts)."""


class LoggingCfg(Strict):
    sinks: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    """Mirror metrics.jsonl to these tools, inside the run dir (pip install rftkit[tensorboard] etc.)."""


class RewardComponentCfg(Strict):
    """One reward term: a verifier by name, a user function `file.py:fn`, a reward model
    folder, or RLPR ({debias: true}); weighted, optionally a gate (score 0 unless it passes)."""

    name: str
    verifier: str | None = None
    fn: str | None = None
    model: str | None = None
    rlpr: dict[str, Any] | None = None
    weight: float = 1.0
    gate: bool = False
    batch_size: int = Field(0, ge=0)
    isolation: Literal["auto", "inline", "thread", "process"] = "auto"
    params: dict[str, Any] = Field(default_factory=dict)


class RewardCfg(Strict):
    """Composite rewards run by `rftkit.rewards.RewardRunner` (worker pool, per-call timeout,
    fallback score on error). Without this section each problem's own verifier runs inline."""

    components: list[RewardComponentCfg] = Field(default_factory=lambda: [RewardComponentCfg(name="correct")])
    primary: str | None = None
    gate_penalty: float = 0.0
    cosine: dict[str, Any] | None = None
    overlong: dict[str, Any] | None = None
    workers: int = Field(2, ge=1)
    timeout: float = Field(10.0, gt=0)
    fallback: float = 0.0


class Config(Strict):
    seed: int = 0
    out_dir: str = "runs"
    name: str = "default"
    """The run directory is out_dir/name."""
    imports: list[str] = Field(default_factory=list)
    """Python files to import first (user tasks, verifiers, objectives...)."""
    model: ModelCfg = Field(default_factory=ModelCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    rollout: RolloutCfg = Field(default_factory=RolloutCfg)
    optim: OptimCfg = Field(default_factory=OptimCfg)
    stages: list[StageCfg]
    eval: EvalCfg = Field(default_factory=EvalCfg)
    checkpoint: CheckpointCfg = Field(default_factory=CheckpointCfg)
    reward: RewardCfg | None = None
    logging: LoggingCfg = Field(default_factory=LoggingCfg)
    dist: DistCfg = Field(default_factory=DistCfg)
    progress: bool = True
    stage_cache: bool = True
    """Reuse a stage trained before with the same config, code, torch and threads instead of
    training it again (out_dir/.stage_cache; built-in models only, see train/stage_cache.py)."""

    @model_validator(mode="after")
    def _evaluated_splits_have_problems(self) -> Config:
        for split in self.eval.splits:
            size = getattr(self.data, f"{split}_size")
            if size == 0:
                raise Bound(f"data.{split}_size", size, f"should be at least 1: eval.splits lists '{split}' "
                                                        f"(or leave '{split}' out of eval.splits)")
        return self

    @model_validator(mode="after")
    def _async_corrects_staleness(self) -> Config:
        """Async rollouts are up to K updates old: the policy objective's truncated IS weight
        corrects for that (dist/async_rollout.py). 2 is the cap AReaL and verl use."""
        if self.dist.async_.max_staleness:
            for s in self.stages:
                for o in s.objectives:
                    if o.name == "policy" and "tis_cap" not in o.params:
                        o.params["tis_cap"] = 2.0
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def apply_override(tree: dict, dotted: str, raw: str, source: str) -> None:
    """Set `a.b.c=value` in a plain dict; the value is parsed as YAML (so 3 -> int)."""
    keys = dotted.split(".")
    node: Any = tree
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            idx = _list_index(node, key, ".".join(keys[:i]), source)
            if last:
                node[idx] = yaml.safe_load(raw)
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = yaml.safe_load(raw)
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(f"{source}: cannot set '{dotted}': '{'.'.join(keys[:i])}' is a value, not a section")


def _list_index(items: list, key: str, path: str, source: str) -> int:
    if key.lstrip("-").isdigit() and -len(items) <= int(key) < len(items):
        return int(key)
    names = [it.get("name") for it in items if isinstance(it, dict)]
    if key in names:
        return names.index(key)
    raise ConfigError(f"{source}: '{path}' has no element '{key}'; use an index 0..{len(items) - 1}"
                      f" or a name ({', '.join(str(n) for n in names)})")


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    out = []
    for a in args:
        if "=" not in a:
            raise ConfigError(f"override '{a}' is not of the form key.sub=value")
        k, v = a.split("=", 1)
        out.append((k.strip(), v))
    return out


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> Config:
    """Read a recipe YAML, its `base:` chain merged in (`recipe_base`), or start from `base`;
    apply overrides, validate."""
    from rftkit.recipe_base import load_recipe

    source = str(path) if path else "<defaults>"
    tree: dict = dict(base or {})
    if path is not None:
        tree = load_recipe(Path(path))
    for k, v in parse_overrides(list(overrides)):
        apply_override(tree, k, v, f"override '{k}={v}'")
    return validate(tree, source)


def validate(tree: dict, source: str) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, tree, Config)) from None


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False)
