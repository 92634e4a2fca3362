"""The training loop: the stages of a recipe, each a run of the same step (docs/architecture.md).

    for stage in recipe.stages:           # e.g. base (pretrain) -> sft -> rl
        for step in stage:                # sample prompts, roll out, verify, update (step.py)
            log(metrics); maybe eval; maybe checkpoint
        save models/<stage>; evaluate it on the test and OOD splits

A run dir holds the resolved config, metrics.jsonl, checkpoints, models/<stage>, eval/ and
the report. `resume=True` continues from the newest checkpoint exactly: the same weights,
optimizer moments, sampler state and counters, and metrics.jsonl cut back to its length at
that checkpoint, so the resumed run's records equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rftkit.config import Config, to_yaml
from rftkit.data.pool import Pools, build_pools
from rftkit.dist.services import StageServices, make_generator
from rftkit.errors import ConfigError, TrainingAborted
from rftkit.eval.evaluate import evaluate
from rftkit.model.io import build_model, copy_weights, load_model, save_model
from rftkit.model.tokenizer import CharTokenizer
from rftkit.report.log import JsonlLogger
from rftkit.report.progress import EvalProgress, StageProgress, console
from rftkit.report.sinks import build_sinks
from rftkit.report.summary import eval_console_table, note_skipped_rows
from rftkit.rollout.base import GENERATORS
from rftkit.train import stage_cache
from rftkit.train.build import (
    check_bounds,
    check_paths,
    check_prompts_fit,
    context_length,
    episode_limits,
    resolve_model_dir,
    stage_parts,
    task_specs,
)
from rftkit.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rftkit.train.env_checks import check_envs, check_images
from rftkit.train.prm_labels import label_knobs, mark_prm, stage_prm
from rftkit.train.rewards_build import build_reward_runner
from rftkit.train.rollout_rows import context_of
from rftkit.train.scaling_build import build_scaling
from rftkit.train.step import StepParts, rollout, run_step
from rftkit.train.update import UpdateState, update_policy


@dataclass
class RunState:
    """Where the run is; saved in every checkpoint's state.json."""

    stage_idx: int = 0
    stage_step: int = 0
    global_step: int = 0
    metric_lines: int = 0
    elapsed: float = 0.0
    update: dict = field(default_factory=lambda: asdict(UpdateState()))
    sampler: dict | None = None
    demos: dict | None = None
    controller: dict | None = None


@dataclass
class Run:
    cfg: Config
    dir: Path
    model: torch.nn.Module
    tok: CharTokenizer
    pools: Pools
    log: JsonlLogger
    state: RunState
    t0: float
    rewards: object | None = None
    sinks: list = field(default_factory=list)


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2**31 - 1)


def _check_splits(cfg: Config, pools: Pools) -> None:
    """Empty splits fail before training, not at the first evaluation (a dataset's hash split
    can leave a small file without test rows)."""
    for split in ("train", *cfg.eval.splits):
        if not pools.split(split):
            fix = "data.train_size and the tasks' files" if split == "train" else \
                f"the tasks' {split} rows (a larger file, test_path, or test_fraction), or drop it from eval.splits"
            raise ConfigError(f"data: the {split} split has no problems after loading; check {fix}")


def start_run(cfg: Config, resume: bool) -> Run:
    """Fresh run dir (config saved, init weights) or the state of the newest checkpoint."""
    check_paths(cfg)  # before reading a dataset or loading a model: name every missing path at once
    check_bounds(cfg)
    torch.manual_seed(cfg.seed)
    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)
    run_dir = cfg.run_dir
    if cfg.model.path:
        model, tok = _load_hf(cfg)
    elif cfg.model.init:
        model, tok = load_model(resolve_model_dir(cfg.model.init), cfg.model.device)
        check_init_vision(cfg, model)
    else:
        tok = CharTokenizer()
        vision = cfg.model.vision.model_dump() if cfg.model.vision else None
        model = build_model(cfg.model.size, cfg.model.max_seq_len, tok, vision).to(cfg.model.device)
    # after the model: dataset prompts are measured with its tokenizer against its context
    pools = build_pools(task_specs(cfg, context_length(model, tok), tok), cfg.data.train_size, cfg.data.test_size,
                        cfg.data.ood_size, cfg.seed)
    check_images(cfg, pools, tok)
    check_prompts_fit(cfg, pools, tok, context_length(model, tok))
    check_envs(cfg, pools)
    _check_splits(cfg, pools)
    state = RunState()
    if resume:
        ckpt = latest_checkpoint(run_dir)
        raw = load_checkpoint(ckpt, model)
        state = RunState(**{k: raw[k] for k in RunState.__dataclass_fields__})
        log = JsonlLogger(run_dir / "metrics.jsonl", keep_lines=state.metric_lines)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        save_model(model, tok, run_dir / "models" / "init")
        log = JsonlLogger(run_dir / "metrics.jsonl", keep_lines=0)
    if pools.notes and not resume:
        log.log({"step": 0, "stage": "data", **pools.notes})
    skipped = note_skipped_rows(run_dir, pools.skipped, pools.notes)  # rows left out: say so before training
    if skipped:
        console.print(skipped, markup=False, highlight=False, soft_wrap=True)
    sinks = build_sinks(cfg.logging.sinks, run_dir, cfg.model_dump(mode="json"),
                        resume_step=state.global_step + 1 if resume else None)
    return Run(cfg, run_dir, model, tok, pools, log, state, time.perf_counter() - state.elapsed, sinks=sinks)


def check_init_vision(cfg: Config, model) -> None:
    """model.vision with model.init: the loaded model must be that VLM (a recipe's vision
    section stays valid when a run starts from its own base model)."""
    want = cfg.model.vision.model_dump() if cfg.model.vision else None
    have = getattr(model, "cfg", None) and getattr(model.cfg, "vision", None)
    if want is not None and have != want:
        raise ConfigError(f"model.vision is {want}, but model.init ({cfg.model.init}) holds "
                          f"{'a text-only model' if not have else f'a VLM with vision {have}'}; remove model.vision "
                          f"or start from a model built with it")


def _load_hf(cfg: Config):
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer

    m = cfg.model
    try:
        model = load_hf_policy(m.path, dtype=m.dtype, device=m.device, lora=m.lora,
                               gradient_checkpointing=m.gradient_checkpointing, trust_remote_code=m.trust_remote_code,
                               train_vision=m.train_vision)
        tok = load_hf_tokenizer(m.path, system_prompt=m.system_prompt, chat_template=m.chat_template,
                                trust_remote_code=m.trust_remote_code)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise ConfigError(f"model.path: {e}") from None
    return model, tok


def train(cfg: Config, resume: bool = False) -> Run:
    run = start_run(cfg, resume)
    try:
        if cfg.reward is not None:
            run.rewards = build_reward_runner(cfg.reward, run.model, run.tok, run.dir, cfg.dist)
        while run.state.stage_idx < len(cfg.stages):
            idx, first_line, fresh = run.state.stage_idx, run.log.lines, run.state.stage_step == 0
            if fresh and _reuse_stage(run):
                continue
            train_stage(run)
            if fresh:  # a stage resumed midway has lines from before this process: not stored
                stage_cache.store(run, idx, first_line, run.state.update)
    finally:
        run.log.close()
        for sink in run.sinks:
            sink.close()
        if run.rewards is not None:
            run.rewards.close()
        if cfg.dist.enabled:  # a Ray cluster this run started ends with it
            from rftkit.dist.cluster import shutdown_ray

            shutdown_ray()
    return run


def _reuse_stage(run: Run) -> bool:
    """Copy the current stage from the stage cache (same config, code, torch, threads) instead
    of training it; the run then goes on exactly as after training it. False on a miss."""
    st = run.state
    hit = stage_cache.restore(run, st.stage_idx)
    if hit is None:
        return False
    name = run.cfg.stages[st.stage_idx].name
    st.global_step, st.update = hit["global_step"], hit["update"]
    st.stage_idx, st.stage_step, st.sampler, st.demos, st.controller = st.stage_idx + 1, 0, None, None, None
    st.metric_lines, st.elapsed = run.log.lines, time.perf_counter() - run.t0
    unused = torch.optim.SGD(run.model.parameters(), lr=0.0)  # a stage-end checkpoint's optimizer is never read
    save_checkpoint(run.dir, st.global_step, run.model, run.tok, unused, asdict(st), run.cfg.checkpoint.keep)
    if run.cfg.progress:
        console.print(f"stage {name}: reused from {hit['entry']} (same config, code, torch and threads; "
                      f"stage_cache=false trains it again)")
        results = json.loads((run.dir / "eval" / f"{name}.json").read_text())["results"]
        console.print(eval_console_table(name, st.global_step, results))
    return True


def _ref_model(run: Run, idx: int, parts_needs_ref: bool, resets: bool):
    if not parts_needs_ref:
        return None
    if getattr(run.model, "has_adapters", False):  # LoRA: the base with adapters off, no copy
        from rftkit.model.hf import BaseModelView, check_foldable

        if resets:  # fail now, not at the first reset N steps in
            try:
                check_foldable(run.model)
            except ValueError as e:
                raise ConfigError(f"rl.ref_reset_every with model.lora: {e}") from None
        return BaseModelView(run.model)
    prev = "init" if idx == 0 else run.cfg.stages[idx - 1].name
    ref, _ = load_model(run.dir / "models" / prev, run.cfg.model.device)
    return copy_weights(ref)


def _teacher(run: Run, stage, needed: bool):
    if not needed:
        return None
    if not stage.teacher:
        raise ConfigError(f"stage '{stage.name}': an objective needs a teacher; set stages.{stage.name}.teacher "
                          f"to a model folder or run dir")
    path = stage.teacher if Path(stage.teacher).exists() else str(run.dir / stage.teacher)
    teacher, _ = load_model(resolve_model_dir(path), run.cfg.model.device)
    return copy_weights(teacher)


def train_stage(run: Run) -> None:
    cfg, st = run.cfg, run.state
    stage = cfg.stages[st.stage_idx]
    start = st.global_step - st.stage_step
    pool = [p for p in run.pools.train if stage.tasks is None or p.source in stage.tasks]
    parts = stage_parts(cfg, stage, run.model, run.tok, pool, cfg.seed + st.stage_idx, start)
    offline = stage.rollout.policy == "reference"
    parts.ref_model = _ref_model(run, st.stage_idx, offline or bool({"ref", "ref_demos", "ref_pairs"} & parts.needs),
                                 bool(stage.rl.ref_reset_every))
    if offline:  # the frozen reference samples the stage's rollouts (offline data)
        parts.generator = make_generator(cfg, parts.ref_model, run.tok)
    parts.teacher = _teacher(run, stage, "teacher" in parts.needs)
    parts.prm = stage_prm(run.dir, stage, "prm" in parts.needs, cfg.model.device)
    parts.rewards = run.rewards
    update = UpdateState(**st.update)
    if st.stage_step == 0:
        update.kl_coef = None  # a KL-in-reward transform starts from its own `coef`
    else:  # resuming inside this stage: restore what the step mutates
        load_checkpoint(latest_checkpoint(run.dir), run.model, parts.optimizer, _extra_modules(parts))
        parts.sampler.load_state_dict(st.sampler)
        parts.demo_provider.load_state_dict(st.demos or {})
        if parts.controller is not None:
            parts.controller.load_state_dict(st.controller)
    bar = StageProgress(cfg.progress)
    bar.start(stage.name, stage.steps, st.stage_step)
    services = StageServices(cfg, parts, stage.steps, lambda s: step_seed(cfg.seed, start + s), update_policy, rollout)
    try:
        while st.stage_step < stage.steps:
            metrics = run_step(parts, update, st.global_step, st.stage_step / max(1, stage.steps),
                               step_seed(cfg.seed, st.global_step), services.prefetch(st.stage_step))
            metrics.update(services.metrics())
            st.global_step += 1
            st.stage_step += 1
            if stage.rl.ref_reset_every and st.stage_step % stage.rl.ref_reset_every == 0 and parts.ref_model:
                _reset_reference(run, parts)
                metrics["policy/ref_reset"] = 1.0
            _log(run, stage.name, metrics)
            bar.advance(st.stage_step, metrics)
            if update.bad_in_row > cfg.optim.max_bad_steps:
                raise TrainingAborted(
                    f"stage '{stage.name}' step {st.stage_step}: {update.bad_in_row} non-finite steps in a row "
                    f"(optim.max_bad_steps={cfg.optim.max_bad_steps}); the last checkpoint in "
                    f"{run.dir / 'checkpoints'} is intact")
            if cfg.eval.every and st.stage_step % cfg.eval.every == 0 and st.stage_step < stage.steps:
                run_eval(run, parts, stage.name, save=False)
            if st.stage_step % cfg.checkpoint.every == 0 or st.stage_step == stage.steps:
                _checkpoint(run, parts, update)
        bar.stop()
        _finish_stage(run, parts, stage, update)  # the final eval may sample with the stage's engine
    finally:
        bar.stop()
        services.close()


def _finish_stage(run: Run, parts: StepParts, stage, update: UpdateState) -> None:
    """Save the stage's model (and reward model), evaluate it, move the state to the next stage."""
    st = run.state
    save_model(run.model, run.tok, run.dir / "models" / stage.name)
    if parts.scorer is not None:  # a reward-model stage: save the RM, report its held-out pair accuracy
        from rftkit.train.reward_stage import finish_reward_model

        finish_reward_model(run, parts, stage)
        if "step_labels" in parts.needs:  # a process reward model: its step separator goes with it
            mark_prm(run.dir / "reward_models" / stage.name, label_knobs(parts)[0])
    run_eval(run, parts, stage.name, save=True)
    st.stage_idx, st.stage_step = st.stage_idx + 1, 0
    _checkpoint(run, parts, update)


def _reset_reference(run: Run, parts: StepParts) -> None:
    """ProRL reference reset (arXiv:2505.24864): the reference becomes the current policy and
    the optimizer is re-initialized ("along with reinitializing the optimizer", section 2.2).

    Full fine-tuning copies the weights into the frozen reference. LoRA (the reference is the
    base with adapters off) folds the adapters into the base and zeroes B: the policy's
    function is unchanged and its adapters restart from zero. Either way every trained
    parameter's Adam state is dropped (a critic's too: it belongs to the same optimizer).
    """
    from rftkit.model.hf import BaseModelView, fold_adapters_into_base

    if isinstance(parts.ref_model, BaseModelView):
        fold_adapters_into_base(run.model)
    else:
        parts.ref_model.load_state_dict(run.model.state_dict())
    parts.optimizer.state.clear()


def _log(run: Run, stage: str, metrics: dict) -> None:
    record = {"step": run.state.global_step, "stage": stage, "time": round(time.perf_counter() - run.t0, 3), **metrics}
    run.log.log(record)
    for sink in run.sinks:
        sink.log(record)


def _checkpoint(run: Run, parts: StepParts, update: UpdateState) -> None:
    st = run.state
    st.metric_lines = run.log.lines
    st.elapsed = time.perf_counter() - run.t0
    st.update = asdict(update)
    st.sampler = parts.sampler.state_dict() if st.stage_step > 0 else None
    st.demos = parts.demo_provider.state_dict() if st.stage_step > 0 else None
    st.controller = parts.controller.state_dict() if parts.controller is not None and st.stage_step > 0 else None
    if parts.learners is not None:  # the optimizer's moments live in the learners
        parts.learners.pull_optimizer(parts.optimizer)
    save_checkpoint(run.dir, st.global_step, run.model, run.tok, parts.optimizer, asdict(st),
                    run.cfg.checkpoint.keep, _extra_modules(parts) if st.stage_step > 0 else {})


def _extra_modules(parts: StepParts) -> dict:
    """Stage-local modules a checkpoint must hold besides the policy (critic, reset reference).

    The reference is saved only when ProRL resets move it; otherwise resuming rebuilds it from
    models/<previous stage>, and an HF run's checkpoints do not carry a second full model.
    """
    ref = parts.ref_model if parts.ref_reset_every else None
    return {k: m for k, m in (("critic", parts.critic), ("scorer", parts.scorer), ("ref", ref)) if m is not None}


def run_eval(run: Run, parts: StepParts, stage: str, save: bool) -> dict[str, dict]:
    """Evaluate the current policy on the configured splits; log, and save if at a stage end."""
    cfg, results = run.cfg, {}
    t0 = time.perf_counter()
    # the stage's engine when it samples the policy itself (a vLLM instance or Ray workers are not rebuilt)
    own = getattr(parts.generator, "model", None) is run.model
    gen = parts.generator if own else GENERATORS.bind(cfg.rollout.engine)(run.model, run.tok)
    spec = build_scaling(cfg.eval.scaling, run.dir, cfg.model.device)
    scaling = {} if spec is None else {"scaling": spec}
    # at a stage's end only: mid-stage, the stage's bar is live and rich shows one live display
    with EvalProgress(cfg.progress and save) as bar:
        for split in cfg.eval.splits:
            summary, records = evaluate(
                gen, run.tok, run.pools.split(split), n=cfg.eval.n_samples, ks=cfg.eval.ks,
                temperature=cfg.eval.temperature, max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                seed=step_seed(cfg.seed + 17, run.state.global_step), extended=True, model=run.model,
                stop=tuple(cfg.rollout.stop), progress=bar.split(f"{stage}/{split}"), episodes=episode_limits(cfg),
                context=context_of(run.model), **scaling)
            results[split] = summary
            if save:
                out = run.dir / "eval"
                out.mkdir(exist_ok=True)
                with (out / f"{stage}_{split}.jsonl").open("w") as f:
                    for r in records:
                        f.write(json.dumps(r) + "\n")
    if not own and hasattr(gen, "close"):  # an engine built for this evaluation (vLLM) frees its memory
        gen.close()
    metrics = {f"eval/{s}/{k}": v for s, res in results.items() for k, v in res.items() if "/d" not in k}
    metrics["time/eval"] = time.perf_counter() - t0
    _log(run, stage, metrics)
    if cfg.progress:
        console.print(eval_console_table(stage, run.state.global_step, results))
    if save:
        (run.dir / "eval" / f"{stage}.json").write_text(json.dumps({"stage": stage, "step": run.state.global_step,
                                                                    "results": results}, indent=1))
    return results
