"""One typed config tree: YAML recipes, dotted CLI overrides, validation with helpful errors.

Pydantic models with `extra="forbid"` give types and coercion; this module only adds the
things pydantic does not do: dotted overrides (`stages.rl.steps=50`, lists indexed by
position or by an element's `name`) and error messages that name the key, the file and the
closest valid key. Parts receive plain arguments built from these objects, never the
objects themselves (STYLE G5). Registered parts are configured by `{name, params}`; their
params are checked against the part's keyword-only signature (`Registry.bind`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rftkit.errors import ConfigError
from rftkit.registry import closest


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PartCfg(Strict):
    """A registered part by name, with its keyword-only knobs."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelCfg(Strict):
    size: str = "micro"
    """Built-in model size (nano ~0.45M, micro ~1.8M, mini ~14M parameters)."""
    max_seq_len: int = 128
    init: str | None = None
    """Start from these weights: a run dir, a checkpoint dir or a models/<stage> dir."""
    device: str = "cpu"
    threads: int = 0
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


class TaskCfg(Strict):
    name: str
    label: str | None = None
    """Source label of its problems (default: the task name); stages and curricula select by it."""
    weight: float = 1.0
    """Share of the training pool drawn from this task."""
    difficulty: tuple[int, int] | None = None
    """In-distribution difficulty range (inclusive); None = the task's default."""
    ood_difficulty: tuple[int, int] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class DataCfg(Strict):
    tasks: list[TaskCfg] = Field(default_factory=lambda: [TaskCfg(name="arithmetic")])
    train_size: int = 20000
    """Training pool size (prompts), split across tasks by weight; test prompts excluded."""
    test_size: int = 200
    """Held-out in-distribution problems per task."""
    ood_size: int = 200
    """Out-of-distribution (harder) problems per task."""


class RolloutCfg(Strict):
    engine: str = "kv"
    group_size: int = 8
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop: list[str] = Field(default_factory=list)


class ObjectiveCfg(Strict):
    name: str
    weight: float | PartCfg = 1.0
    """A constant, or a schedule `{name: cosine, params: {start: 1, end: 0}}` over the stage."""
    params: dict[str, Any] = Field(default_factory=dict)


class RLCfg(Strict):
    """Rollout-side pieces of RL methods (DAPO, PPO-RLHF, ProRL); all off by default."""

    zero_variance: Literal["keep", "drop", "refill"] = "keep"
    """Groups whose rewards are all equal: keep them, drop them, or drop and over-sample
    until the batch is full again (DAPO dynamic sampling)."""
    max_refill_rounds: int = 4
    overlong_cache: int = 0
    """DAPO soft overlong punishment over the last N tokens of max_new_tokens (0 = off)."""
    mask_truncated: bool = False
    """Exclude completions that hit max_new_tokens from the loss (DAPO overlong filtering)."""
    kl_reward_coef: float = 0.0
    """KL(pi || ref) subtracted from the token rewards (PPO-RLHF / ReFT style); 0 = off."""
    kl_reward_estimator: str = "k1"
    kl_target: float | None = None
    """Adaptive KL coefficient (Ziegler et al. 2019) towards this KL per token; None = fixed."""
    kl_horizon: int = 10000
    ref_reset_every: int = 0
    """Reset the reference policy to the current one every N steps (ProRL); 0 = never."""
    critic_lr: float = 1e-4
    """Learning rate of the value model (only when an objective or estimator needs values)."""
    offpolicy_per_group: int = 0
    """Demonstrations placed in each group in place of on-policy samples (LUFFY, RL-PLUS)."""
    prefix_rows: int = 0
    """Rollouts per group that continue from a demonstration prefix (Prefix-RFT)."""
    prefix_ratio: float | PartCfg = 0.5
    """Share of the demonstration given as prefix: a constant or a schedule over the stage."""
    hint_levels: list[float] = Field(default_factory=list)
    """GHPO: groups that all fail are re-sampled with this share of the solution as a hint,
    trying each level in turn (e.g. [0.25, 0.5, 0.75]); empty = off."""
    skip_inert_rows: bool = True
    """Leave rows whose advantage is 0 at every token out of the training forward when every
    objective reading rollouts gives them zero loss and gradient (e.g. GRPO's all-equal groups
    without a KL or entropy term). The update is unchanged; `policy/entropy` and
    `rollout/logprob_diff` then cover the forwarded rows only."""


class StageCfg(Strict):
    name: str
    steps: int = Field(ge=0)
    tasks: list[str] | None = None
    """Train on these task labels of data.tasks only (None = all); evaluation covers all."""
    batch_size: int = Field(32, ge=1)
    """Prompts per step (each rolled out group_size times when a rollout is needed)."""
    objectives: list[ObjectiveCfg]
    advantage: PartCfg = Field(default_factory=lambda: PartCfg(name="grpo"))
    sampler: PartCfg = Field(default_factory=lambda: PartCfg(name="uniform"))
    demos: PartCfg = Field(default_factory=lambda: PartCfg(name="task"))
    """Where demonstrations come from (for objectives that use them)."""
    lr: float | None = None
    """Overrides optim.lr for this stage."""
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    update_epochs: int = Field(1, ge=1)
    """Passes over one rollout batch (PPO epochs); old log-probs are cached."""
    minibatches: int = Field(1, ge=1)
    """Optimizer steps per epoch, each on a slice of the batch."""
    rl: RLCfg = Field(default_factory=RLCfg)
    controller: PartCfg | None = None
    """Sets objective weights each step from training signals (sasr, amft); None = schedules only."""
    teacher: str | None = None
    """A model folder or run dir whose log-probs objectives needing "teacher" read (KDRL)."""


class OptimCfg(Strict):
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step (gradients summed, each scaled by 1/grad_accum)."""
    max_bad_steps: int = 5
    """Abort after this many consecutive non-finite loss/gradient steps (each is skipped)."""


class EvalCfg(Strict):
    every: int = 0
    """Evaluate every N steps within a stage; 0 = only at the end of each stage."""
    n_samples: int = 16
    ks: list[int] = Field(default_factory=lambda: [1, 4, 16])
    temperature: float = 1.0
    splits: list[Literal["test", "ood"]] = Field(default_factory=lambda: ["test", "ood"])
    max_new_tokens: int | None = None
    """None = rollout.max_new_tokens."""


class CheckpointCfg(Strict):
    every: int = 50
    keep: int = 2


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
    batch_size: int = 0
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
    workers: int = 2
    timeout: float = 10.0
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
    progress: bool = True

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
    """Read a recipe YAML (or start from `base`), apply overrides, validate."""
    source = str(path) if path else "<defaults>"
    tree: dict = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe file '{p}' does not exist; `rftkit recipes` lists the shipped ones")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: expected a mapping of config sections at the top level")
    for k, v in parse_overrides(list(overrides)):
        apply_override(tree, k, v, f"override '{k}={v}'")
    return validate(tree, source)


def validate(tree: dict, source: str) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        where = ".".join(loc)
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            hint = closest(loc[-1], valid)
            lines.append(f"  unknown key '{where}'.{hint} Valid keys here: {', '.join(valid)}")
        elif e["type"] == "missing":
            lines.append(f"  missing required key '{where}'")
        else:
            lines.append(f"  '{where}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _valid_keys(loc: list[str]) -> list[str]:
    """Field names of the model found by walking the Config classes along `loc`."""
    model: Any = Config
    for key in loc:
        if key.isdigit():
            continue
        field = model.model_fields.get(key)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args] + [a for x in args for a in getattr(x, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
