"""Builds the reward runner of a run from its `reward:` config section (rftkit.rewards)."""

from __future__ import annotations

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
        fn = R.RewardModel(c.model, **c.params)
    elif c.rlpr is not None:
        fn = R.RLPRReward(R.causal_lm_logprob_fn(model, tok.encode, bos=[tok.bos_id]), **c.rlpr)
    else:
        fn = None
    if fn is None and c.verifier:
        VERIFIERS.bind(c.verifier, c.params, where=f"reward.components.{c.name}.params")  # fail early
    return R.Component(c.name, verifier=c.verifier, fn=fn, weight=c.weight, gate=c.gate, isolation=c.isolation,
                       params=c.params if fn is None else {}, batch_size=c.batch_size)


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


def build_reward_runner(cfg: RewardCfg, model, tok, base: Path):
    """A RewardRunner, its worker processes started if a component runs there (they import
    torch and math-verify: seconds, and memory per worker); the caller closes it."""
    import rftkit.rewards as R

    try:
        comps = tuple(_component(c, model, tok, base) for c in cfg.components)
        spec = R.RewardSpec(comps, primary=cfg.primary, gate_penalty=cfg.gate_penalty,
                            cosine=R.CosineLength(**cfg.cosine) if cfg.cosine else None,
                            overlong=R.Overlong(**cfg.overlong) if cfg.overlong else None)
    except (RegistryError, TypeError, ValueError, R.RewardFnError) as e:
        raise ConfigError(f"reward: {e}") from None
    runner = R.RewardRunner(spec, workers=cfg.workers, timeout=cfg.timeout, fallback=cfg.fallback)
    return runner.start() if _needs_processes(comps) else runner
