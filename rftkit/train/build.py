"""Builders: turn config objects into the plain parts a stage runs with.

This is the only place in `train/` that reads config classes; parts get plain arguments.
`check_names` binds every registered part of a config up front, nested names and knobs
included (`Registry.bind`), so a typo fails before any training with the config path in the
message; `stage_parts` binds them again into the `StepParts` a stage runs with.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

import rftkit.envs  # noqa: F401  (registers the built-in environments)
import rftkit.rewards  # noqa: F401,E402  (registers math, numeric, unit_tests, ... verifiers)
from rftkit.algos.advantages import ADVANTAGES
from rftkit.algos.layouts import GROUP_LAYOUTS
from rftkit.algos.objectives import OBJECTIVES
from rftkit.algos.resample import RESAMPLERS
from rftkit.algos.schedules import SCHEDULES
from rftkit.algos.shaping import REWARD_TRANSFORMS
from rftkit.config import Config, ObjectiveCfg, StageCfg
from rftkit.data.demos import DEMO_SOURCES
from rftkit.data.pairs import PAIR_SOURCES
from rftkit.data.pool import TaskSpec
from rftkit.data.samplers import SAMPLERS
from rftkit.dist.checks import check_dist
from rftkit.dist.services import make_generator
from rftkit.envs.episodes import EpisodeLimits
from rftkit.errors import ConfigError, bound_error
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.model.reward_model import RewardScorer
from rftkit.registry import Bound, RegistryError
from rftkit.rollout.base import GENERATORS, SamplingParams
from rftkit.rollout.vllm_engine import check_vllm
from rftkit.tasks.base import TASKS
from rftkit.train.controllers import CONTROLLERS
from rftkit.train.critic import Critic
from rftkit.train.step import StepParts, Term


def stage_binds(s: StageCfg) -> dict[str, Bound | list[Bound]]:
    """Every registered part of a stage, bound with its knobs (raises RegistryError, whose
    message names the key as a recipe or an override writes it)."""
    w = f"stages.{s.name}"
    r = s.rollout
    return {
        "objectives": [OBJECTIVES.bind(o.name, o.params, where=f"{w}.objectives.{o.name}") for o in s.objectives],
        "weights": [SCHEDULES.bind(o.weight.name, o.weight.params, where=f"{w}.objectives.{o.name}.weight")
                    for o in s.objectives if not isinstance(o.weight, float)],
        "advantage": ADVANTAGES.bind(s.advantage.name, s.advantage.params, where=f"{w}.advantage"),
        "sampler": SAMPLERS.bind(s.sampler.name, s.sampler.params, where=f"{w}.sampler"),
        "demos": DEMO_SOURCES.bind(s.demos.name, s.demos.params, where=f"{w}.demos"),
        "pairs": PAIR_SOURCES.bind(s.pairs.name, s.pairs.params, where=f"{w}.pairs"),
        "controller": [CONTROLLERS.bind(s.controller.name, s.controller.params, where=f"{w}.controller")]
        if s.controller else [],
        "layout": GROUP_LAYOUTS.bind(r.groups.name, r.groups.params, where=f"{w}.rollout.groups"),
        "resamplers": [RESAMPLERS.bind(p.name, p.params, where=f"{w}.rollout.resample.{p.name}") for p in r.resample],
        "transforms": [REWARD_TRANSFORMS.bind(p.name, p.params, where=f"{w}.rollout.rewards.{p.name}")
                       for p in r.rewards],
    }


def check_names(cfg: Config) -> None:
    """Every registered name in the config exists and its params (nested ones too) are real knobs."""
    try:
        GENERATORS.bind(cfg.rollout.engine, {}, where="rollout.engine")
        for i, t in enumerate(cfg.data.tasks):
            TASKS.bind(t.name, t.params, where=f"data.tasks.{t.label or i}")
        for s in cfg.stages:
            stage_binds(s)
    except RegistryError as e:
        raise ConfigError(str(e)) from None
    task_names = {t.label or t.name for t in cfg.data.tasks}
    for s in cfg.stages:
        unknown = sorted(set(s.tasks or []) - task_names)
        if unknown:
            raise ConfigError(f"stages.{s.name}.tasks: {unknown} not in data.tasks ({sorted(task_names)})")
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"stages: names must be unique, got {names}")
    if not cfg.stages:
        raise ConfigError("stages: a recipe needs at least one stage")


def _is_local(path: str) -> bool:
    """A path the user means as a local file (what `load_hf_policy` treats as one); a bare
    name like `Qwen/Qwen2.5-0.5B-Instruct` is a hub name, resolved later with network."""
    return path.startswith(("/", ".", "~")) or Path(path).expanduser().exists()


def check_paths(cfg: Config) -> None:
    """The local model folder and dataset files a recipe names exist, before anything is read.

    Recipes for real workloads ship placeholder paths; the error names every missing one by
    the dotted key that sets it, so the fix is one override per line.
    """
    missing = []
    if cfg.model.path and _is_local(cfg.model.path) and not Path(cfg.model.path).expanduser().exists():
        missing.append(("model.path", cfg.model.path))
    for i, t in enumerate(cfg.data.tasks):
        if t.name != "dataset" or t.params.get("format") == "hub":
            continue
        for key in ("path", "test_path", "ood_path"):
            value = t.params.get(key)
            if isinstance(value, str) and not Path(value.split("#", 1)[0]).exists():
                missing.append((f"data.tasks.{i}.params.{key}", value))
    if missing:
        lines = "\n".join(f"  {key}: '{value}' does not exist (override it: {key}=/your/path)"
                          for key, value in missing)
        raise ConfigError(f"missing local files:\n{lines}")


def check_device(device: str) -> None:
    """`model.device` names a device this machine has (a run's config may come from another);
    "auto" is Hugging Face models' own choice (`load_hf_policy`)."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise bound_error("model.device", device, f"should be a torch device such as cpu, cuda, cuda:1 ({e})") from None
    count = {"cuda": torch.cuda.device_count, "mps": lambda: int(torch.backends.mps.is_available())}.get(dev.type)
    if count is not None and (dev.index or 0) >= count():
        raise bound_error("model.device", device, f"should be a device of this machine, which has {count()} "
                                                  f"{dev.type} device(s); model.device=cpu runs anywhere")


def check_bounds(cfg: Config) -> None:
    """The bounds that depend on registered parts or on this machine (the others are in
    `rftkit.config`)."""
    check_device(cfg.model.device)
    check_dist(cfg, lambda s: _needs(stage_binds(s)))
    check_vllm(cfg)
    if cfg.model.train_vision and not cfg.model.path:
        raise ConfigError("model.train_vision applies to a Hugging Face vision-language model (model.path); the "
                          "built-in VLM (model.vision) always trains its encoder")
    if cfg.model.vision is not None and cfg.model.path:
        raise ConfigError("model.vision configures the built-in VLM, but model.path loads a Hugging Face model, "
                          "which brings its own vision tower (or none); remove model.vision")
    try:
        for s in cfg.stages:
            _check_stage(s, stage_binds(s), cfg.rollout)
    except RegistryError as e:
        raise ConfigError(str(e)) from None
    for s in cfg.stages:
        if s.rollout.policy == "reference" and cfg.model.lora:
            raise bound_error(f"stages.{s.name}.rollout.policy", "reference", (
                "is not supported with model.lora: the reference of a LoRA run is the base model seen through "
                "the policy (adapters off), which the generation engine cannot sample from; use full "
                "fine-tuning (model.lora: null) or rollout.policy: current"))


def _check_prm(s: StageCfg, binds: dict) -> None:
    """A stage's `prm` folder is set exactly when a part reads a process reward model."""
    last = binds["transforms"][-1] if binds["transforms"] else None
    if "prm" in binds["advantage"].needs and (last is None or "prm" not in last.needs):
        raise ConfigError(f"stages.{s.name}.rollout.rewards: advantage '{s.advantage.name}' reads step rewards; "
                          f"list a transform that makes them from the PRM (process_rewards) last")
    if ("prm" in _needs(binds)) == bool(s.prm):
        return
    raise ConfigError(f"stages.{s.name}.prm: " + (
        "a part of the stage needs a process reward model (process_rewards, grpo_process); set it to a PRM "
        "folder, e.g. reward_models/prm" if not s.prm else "no part of the stage reads a process reward model "
        "(process_rewards, grpo_process), so it would do nothing; remove it"))


def _check_stage(s: StageCfg, binds: dict, r) -> None:
    needs = set().union(*(o.needs for o in binds["objectives"]))
    rolls_out = "rollout" in _needs(binds)
    if "values" in needs and not binds["advantage"].marks.get("returns"):
        raise bound_error(f"stages.{s.name}.advantage", s.advantage.name, (
            "should be an estimator that also gives value targets (gae): an objective of the stage trains a critic"))
    _check_prm(s, binds)
    ro = s.rollout
    if not rolls_out and (ro.resample or ro.rewards or ro.groups.name != "on_policy" or ro.policy != "current"):
        raise ConfigError(f"stages.{s.name}.rollout: the stage samples no rollouts (no objective needs them), so "
                          f"its groups / resample / rewards parts would do nothing; remove them")
    for t in binds["transforms"][:-1]:
        if t.marks.get("token_level"):
            raise ConfigError(f"stages.{s.name}.rollout.rewards: '{t.name}' returns token-level rewards [N, T], "
                              f"which only the advantage reads: list it last")
    for t in binds["transforms"]:
        cache = t.knobs.get("cache", 8) if t.name == "dapo_overlong" else None
        if cache is not None and not 0 < cache <= r.max_new_tokens:
            raise bound_error(f"stages.{s.name}.rollout.rewards.dapo_overlong.params.cache", cache, (
                f"should be in 1..rollout.max_new_tokens ({r.max_new_tokens}): the penalty window is the last "
                f"`cache` tokens of the generation budget"))
    if rolls_out and r.group_size < 2 and binds["advantage"].marks.get("group_relative"):
        raise bound_error("rollout.group_size", r.group_size, (
            f"should be at least 2 with stages.{s.name}.advantage '{s.advantage.name}': it compares each rollout "
            f"with the others of its prompt's group, so groups of one get advantage 0 and nothing trains"))
    # update_policy pairs the i-th rollout slice with the i-th demonstration slice, so the
    # smaller batch (one demonstration per prompt) bounds the minibatches
    rows, what = ((s.batch_size, f"batch_size {s.batch_size}, one demonstration or pair per prompt")
                  if needs & {"demos", "pairs"}
                  else (s.batch_size * r.group_size, f"batch_size {s.batch_size} x rollout.group_size {r.group_size}"))
    if s.minibatches > rows:
        raise bound_error(f"stages.{s.name}.minibatches", s.minibatches, (
            f"should be at most {rows}: a step has {rows} rows ({what}), and a minibatch needs at least one"))


def check_prompts_fit(cfg: Config, pools, tok, context: int | None) -> None:
    """The longest prompt of the generated tasks plus the longest generation fits the model's
    context (dataset rows are measured when their file is read, `task_specs`); without this a
    short context fails at the first rollout or evaluation of a long prompt."""
    labels = {t.label or t.name for t in cfg.data.tasks if t.name != "dataset"}
    problems = [p for split in (pools.train, pools.test, pools.ood) for p in split if p.source in labels]
    if context is None or not problems:
        return
    # tokens grow with images and characters: the longest prompts by those hold the longest in tokens
    # (exactly for the built-in tokenizer; 64 of them cover a BPE tokenizer's slack)
    longest = sorted(problems, key=lambda p: (len(p.images), len(p.prompt)), reverse=True)[:64]
    n, p = max((len(problem_prompt_ids(tok, p)), p.source) for p in longest)
    gen = max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens or 0)
    if n + gen <= context:
        return
    why = (f"the longest prompt (task '{p}') has {n} tokens and completions up to {gen} "
           f"(rollout.max_new_tokens, eval.max_new_tokens)")
    if cfg.model.path or cfg.model.init:  # a loaded model: its context is fixed, generation is not
        raise bound_error("rollout.max_new_tokens", gen, f"should be at most {context - n}: the model's context is "
                                                         f"{context} tokens and {why}")
    raise bound_error("model.max_seq_len", context, f"should be at least {n + gen}: {why}")


def task_specs(cfg: Config, context: int | None = None, tok=None) -> list[TaskSpec]:
    """Plain task specs. Given the model's `context` (and its tokenizer), every "dataset" task
    also gets `max_prompt_tokens` and `count_tokens` (`_prompt_budget`), so a prompt that cannot
    fit is rejected or skipped when its file is read, never mid-training."""
    specs = []
    for t in cfg.data.tasks:
        params = dict(t.params)
        if t.name == "dataset" and context is not None:
            params.update(_prompt_budget(cfg, context, tok, params.get("max_prompt_tokens")))
        specs.append(TaskSpec(t.name, t.label or t.name, t.weight, t.difficulty, t.ood_difficulty, params))
    return specs


def _prompt_budget(cfg: Config, context: int, tok, own_cap: int | None) -> dict:
    """The context minus the longest generation the run asks for (rollouts, and evaluations:
    they sample the same test rows), or a recipe's own lower cap; prompts counted as the
    rollout encodes them."""
    gen = max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens or 0)
    if context - gen < 1:
        raise ConfigError(f"rollout.max_new_tokens / eval.max_new_tokens ({gen}) leave no room for a prompt in "
                          f"the model's context of {context} tokens")
    out = {"max_prompt_tokens": min(context - gen, own_cap or context)}
    if tok is not None:
        out["count_tokens"] = functools.partial(_prompt_tokens, tok)
    return out


def _prompt_tokens(tok, problem) -> int:
    return len(problem_prompt_ids(tok, problem))


HF_NO_LIMIT = 1 << 20
"""What `HFPolicy.cfg.max_seq_len` holds when the model config has no max_position_embeddings."""


def context_length(model, tok) -> int | None:
    """Positions the model can attend over: its own limit (the built-in model's max_seq_len, an
    HF config's max_position_embeddings), else the HF tokenizer's model_max_length (HF's
    "unset" is a huge number), else None."""
    n = getattr(getattr(model, "cfg", None), "max_seq_len", None)
    if n and n < HF_NO_LIMIT:
        return int(n)
    n = getattr(getattr(tok, "hf", None), "model_max_length", None)
    return int(n) if n and n < HF_NO_LIMIT else None


def weight_fn(o: ObjectiveCfg):
    if isinstance(o.weight, float):
        value = o.weight
        return lambda progress: value
    sched = SCHEDULES.bind(o.weight.name, o.weight.params)
    return lambda progress: float(sched(progress))


def lr_fn(base_lr: float, warmup: int, schedule: str, steps: int, start: int):
    """LR at global step: linear warmup, then constant or cosine to 10% over the stage."""

    def lr_at(global_step: int) -> float:
        s = global_step - start
        if warmup and s < warmup:
            return base_lr * (s + 1) / warmup
        if schedule == "cosine" and steps > warmup:
            p = (s - warmup) / max(1, steps - warmup)
            return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))
        return base_lr

    return lr_at


def _needs(binds: dict) -> frozenset[str]:
    """What the stage's step computes: the union of its parts' needs; a demonstration source
    that reads rollouts, or any rollout-side part, implies a rollout."""
    parts = [*binds["objectives"], binds["advantage"], binds["layout"], *binds["resamplers"], *binds["transforms"]]
    needs = set().union(*(p.needs for p in parts))
    if "demos" in needs:
        needs |= binds["demos"].needs
    if "pairs" in needs:
        needs |= binds["pairs"].needs
    if any(p.needs for p in [binds["layout"], *binds["resamplers"], *binds["transforms"]]):
        needs.add("rollout")
    return frozenset(needs)


def _optimizer(model, critic, scorer, lr: float, cfg: Config, stage: StageCfg) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    if critic is not None:
        groups.append({"params": list(critic.parameters()), "lr_scale": stage.rl.critic_lr / lr})
    if scorer is not None:  # a reward model trains at the stage's learning rate
        groups.append({"params": [p for p in scorer.parameters() if p.requires_grad], "lr_scale": 1.0})
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)


def stage_parts(cfg: Config, stage: StageCfg, model, tok, pool, sampler_seed: int, stage_start: int) -> StepParts:
    """Everything one stage's steps run with; the loop adds the reference model when needed."""
    binds = stage_binds(stage)
    terms = [Term(o.name, fn, weight_fn(o)) for o, fn in zip(stage.objectives, binds["objectives"], strict=True)]
    needs = _needs(binds)
    critic = Critic(model) if "values" in needs else None
    scorer = RewardScorer(model) if "scores" in needs else None
    lr = stage.lr if stage.lr is not None else cfg.optim.lr
    r = cfg.rollout
    return StepParts(
        model=model, ref_model=None, critic=critic, scorer=scorer, teacher=None, rewards=None, tok=tok,
        generator=make_generator(cfg, model, tok),
        optimizer=_optimizer(model, critic, scorer, lr, cfg, stage),
        sampler=binds["sampler"](pool, sampler_seed),
        pool=pool, terms=terms, needs=needs,
        layout=binds["layout"], resamplers=binds["resamplers"], transforms=binds["transforms"],
        advantage=binds["advantage"], demo_provider=binds["demos"](pool), pair_source=binds["pairs"](pool),
        controller=binds["controller"][0]() if binds["controller"] else None,
        sampling=SamplingParams(n=r.group_size, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                top_k=r.top_k, top_p=r.top_p, stop=tuple(r.stop)),
        batch_size=stage.batch_size, update_epochs=stage.update_epochs, minibatches=stage.minibatches,
        grad_accum=cfg.optim.grad_accum, grad_clip=cfg.optim.grad_clip, skip_inert_rows=stage.rl.skip_inert_rows,
        ref_reset_every=stage.rl.ref_reset_every,
        lr_at=lr_fn(lr, stage.warmup_steps, stage.lr_schedule, stage.steps, stage_start),
        episode_limits=episode_limits(cfg),
    )


def episode_limits(cfg: Config) -> EpisodeLimits:
    """Budgets of multi-turn rollouts (`rollout.episode`), for training and evaluation."""
    return EpisodeLimits(**cfg.rollout.episode.model_dump())


def resolve_model_dir(path: str) -> Path:
    """A models/<stage> folder, a checkpoint folder, or a run dir (its last stage model)."""
    p = Path(path)
    if (p / "model.json").is_file():
        return p
    if (p / "checkpoints" / "latest").is_file() or (p / "models").is_dir():
        from rftkit.report.summary import final_model_dir  # local: summary imports train

        found = final_model_dir(p)
        if found is not None:
            return found
    raise ConfigError(f"'{path}' is not a model folder, checkpoint or run dir (no model.json found)")
