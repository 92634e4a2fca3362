"""Builds the reward runner of a run from its `reward:` config section (rftkit.rewards).

A component's `model:` folder is one of
  - a reward-model folder rftkit wrote (model.json arch "reward_model", e.g. a run's
    reward_models/<stage>): `ScorerReward`, which scores with the exact token layout the scorer
    trained on; a relative path is resolved against the run dir, and one that names a stage of
    this run (`reward_models/<stage>`) may not exist yet: it loads on first use after that
    stage has saved it (until then it scores 0), so one recipe trains an RM and then uses it;
  - a Hugging Face sequence-classification folder (or hub name): `rftkit.rewards.RewardModel`.
Anything else (a policy folder: no scalar head) is a ConfigError naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

from rftkit.config import RewardCfg
from rftkit.errors import ConfigError
from rftkit.registry import RegistryError
from rftkit.tasks.base import VERIFIERS


def _component(c, model, tok, base: Path):
    import rftkit.rewards as R  # local: optional heavy pieces (math-verify, transformers) load lazily

    if c.fn:
        fn = R.load_reward_fn(c.fn, base=base)
    elif c.model:
        fn = _model_reward(c, model, base)
    elif c.rlpr is not None:
        fn = R.RLPRReward(R.causal_lm_logprob_fn(model, tok.encode, bos=[tok.bos_id]), **c.rlpr)
    else:
        fn = None
    if fn is None and c.verifier:
        VERIFIERS.bind(c.verifier, c.params, where=f"reward.components.{c.name}.params")  # fail early
    return R.Component(c.name, verifier=c.verifier, fn=fn, weight=c.weight, gate=c.gate, isolation=c.isolation,
                       params=c.params if fn is None else {}, batch_size=c.batch_size)


class ScorerReward:
    """A reward-model folder as a batch reward fn: fn(prompts, completions, answers) -> scores.

    Each sample is laid out as in training (`reward_model.score_completions`: the prompt's ids,
    then encode(completion) + [eos]), scored without grad, `batch_size` per forward, on the
    policy's device. `lazy`: the folder is written later in the run (a reward-model stage);
    while it is missing every score is 0, and it is loaded once it exists. Prompts are the
    problems' text: a chat-format problem (meta["messages"]) is scored as its text prompt.
    """

    isolation = "inline"

    def __init__(self, folder: Path, *, device: str = "cpu", batch_size: int = 32, lazy: bool = False) -> None:
        self.folder, self.device, self.batch_size = Path(folder), device, batch_size
        self.scorer = self.tok = None
        if not lazy:
            self._load()

    def _load(self) -> None:
        from rftkit.model.reward_model import load_reward_model

        self.scorer, self.tok = load_reward_model(self.folder, self.device)
        self.scorer.requires_grad_(False)

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str] | None = None) -> list[float]:
        from rftkit.model.reward_model import score_completions

        if self.scorer is None:
            if not (self.folder / "model.json").is_file():
                return [0.0] * len(prompts)
            self._load()
        return score_completions(self.scorer, self.tok, list(prompts), list(completions), self.batch_size)


def _model_reward(c, model, base: Path):
    """The batch fn of a `model:` component (see the module docstring)."""
    import rftkit.rewards as R

    key = f"reward.components.{c.name}.model"
    path = Path(c.model).expanduser()
    if not path.exists() and not path.is_absolute() and (Path(base) / path).exists():
        path = Path(base) / path
    kw = {"device": str(next(model.parameters()).device) if model is not None else "cpu", **c.params}
    if not path.exists():
        if _later_stage_output(path, base, key):
            return ScorerReward(Path(base) / path, lazy=True, **kw)
        return R.RewardModel(c.model, **c.params)  # a hub name (needs network) or the transformers error
    meta = path / "model.json"
    arch = json.loads(meta.read_text()).get("arch") if meta.is_file() else None
    if arch == "reward_model":
        return ScorerReward(path, **kw)
    config = path / "config.json"
    archs = json.loads(config.read_text()).get("architectures") or [] if config.is_file() else []
    if arch is None and any(a.endswith("ForSequenceClassification") for a in archs):
        return R.RewardModel(str(path), **c.params)
    what = f"a policy model folder (model.json arch '{arch}')" if arch else (
        f"a Hugging Face {', '.join(archs) or 'folder without config.json'}")
    raise ConfigError(
        f"{key}: '{c.model}' is {what}, not a reward model: it has no scalar head. Point {key} at a reward-model "
        f"folder: a run's reward_models/<stage> (written by a stage whose objectives include bradley_terry or "
        f"rm_pointwise, e.g. the reward_model recipe; relative paths resolve against the run dir), or a Hugging "
        f"Face AutoModelForSequenceClassification folder (`rftkit export` turns an rftkit reward model into one).")


def _later_stage_output(path: Path, base: Path, key: str) -> bool:
    """Whether `path` is reward_models/<stage> of a stage of this run (its config.yaml), which
    saves it when it ends; a typo in the stage name is a ConfigError now, not zero rewards later."""
    if path.is_absolute() or len(path.parts) != 2 or path.parts[0] != "reward_models":
        return False
    config = Path(base) / "config.yaml"
    if not config.is_file():
        return True
    import yaml

    stages = [s.get("name") for s in (yaml.safe_load(config.read_text()) or {}).get("stages", [])]
    if path.parts[1] not in stages:
        raise ConfigError(f"{key}: '{path}' does not exist and no stage of this run is named '{path.parts[1]}' "
                          f"(stages: {', '.join(map(str, stages))}); name the reward-model stage that writes it, "
                          f"or give an existing reward-model folder")
    return True


def _needs_processes(components) -> bool:
    """Whether some component may run in the worker processes, so that starting them now pays."""
    from rftkit.rewards.spec import isolation_of

    for c in components:
        if c.isolation != "auto":
            mode = c.isolation
        elif c.fn is not None:
            mode = isolation_of(c.fn)
        elif c.verifier:
            mode = isolation_of(VERIFIERS.get(c.verifier))
        else:  # each problem's own verifier: not known before the problems are scored
            return True
        if mode == "process":
            return True
    return False


def build_reward_runner(cfg: RewardCfg, model, tok, base: Path, dist=None):
    """A RewardRunner, its worker processes started if a component runs there (they import
    torch and math-verify: seconds, and memory per worker); the caller closes it. With
    `dist.reward_workers`, those calls run as Ray tasks instead (dist/reward_workers.py)."""
    import rftkit.rewards as R

    try:
        comps = tuple(_component(c, model, tok, base) for c in cfg.components)
        spec = R.RewardSpec(comps, primary=cfg.primary, gate_penalty=cfg.gate_penalty,
                            cosine=R.CosineLength(**cfg.cosine) if cfg.cosine else None,
                            overlong=R.Overlong(**cfg.overlong) if cfg.overlong else None)
    except (RegistryError, TypeError, ValueError, R.RewardFnError) as e:
        raise ConfigError(f"reward: {e}") from None
    pool = None
    if dist is not None and dist.reward_workers:
        if not _needs_processes(comps):
            raise ConfigError(f"dist.reward_workers={dist.reward_workers}: no reward component runs in worker "
                              f"processes (reward.components[*].isolation 'process', or a user reward function), "
                              f"so Ray reward workers would run nothing; set dist.reward_workers=0")
        from rftkit.dist.reward_workers import ray_backend

        pool = ray_backend(dist)
    runner = R.RewardRunner(spec, workers=cfg.workers, timeout=cfg.timeout, fallback=cfg.fallback, pool=pool)
    return runner.start() if _needs_processes(comps) else runner
