"""`eval.scaling` -> `rftkit.eval.scaling.ScalingSpec`: the reward models test-time scaling reads,
loaded from their folders and wrapped as the plain scorers eval/ takes.

Relative folders resolve against the run dir first (`reward_models/<stage>` of this run), then
the working directory. A folder a later stage of this run will write (an RM trained in stage
`rm`, used by evaluations after it) is skipped by the evaluations before it: their selectors
that need it are left out, the others run. Loaded models are cached by folder and file time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rftkit.config import ScalingCfg
from rftkit.errors import ConfigError
from rftkit.eval.scaling import ScalingSpec, Scorer, StepScorer, StepSearch
from rftkit.types import Problem

_CACHE: dict[tuple[str, str, float], object] = {}


def resolve(path: str, run_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() or not (run_dir / p).exists() else run_dir / p


def _cached(kind: str, folder: Path, load):
    key = (kind, str(folder.resolve()), (folder / "model.json").stat().st_mtime)
    if key not in _CACHE:
        _CACHE[key] = load(folder)
    return _CACHE[key]


def _written_later(path: str, run_dir: Path, folder: Path) -> bool:
    """A folder of this run's reward_models/ that is not written yet (skip, do not fail)."""
    return not folder.exists() and not Path(path).is_absolute() and Path(path).parts[:1] == ("reward_models",) \
        and run_dir.is_dir()


def rm_scorer(folder: Path, device: str) -> Scorer:
    from rftkit.train.rewards_build import ScorerReward

    fn = _cached("rm", folder, lambda f: ScorerReward(f, device=device))

    def score(problem: Problem, texts: list[str]) -> list[float]:
        return list(fn([problem.prompt] * len(texts), texts))

    return score


def prm_scorer(folder: Path, device: str) -> StepScorer:
    """Per completion, the PRM's sigmoid score at each step's end. A completion that ends with
    the separator is a partial solution (step search): no eos is appended, so its last step
    ends at that separator; otherwise eos is appended and the last step ends there, as in
    training."""
    from rftkit.model.reward_model import prompt_token_ids
    from rftkit.train.prm_labels import load_prm, prm_step_scores, step_positions

    prm, tok = _cached("prm", folder, lambda f: (load_prm(f, device), _load_tok(f, device)))

    @torch.no_grad()
    def score(problem: Problem, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            prompt = prompt_token_ids(tok, problem.prompt)
            completion = tok.encode(text) + ([] if text.endswith(prm.separator) else [tok.eos_id])
            tokens = torch.tensor([prompt + completion], device=device)
            trained = torch.zeros(tokens.shape, device=device)
            trained[0, len(prompt):] = 1.0
            step_mask, _ = step_positions(tok, tokens, trained, prm.separator)
            scores = prm_step_scores(prm, tokens, step_mask)
            out.append(scores[step_mask > 0].tolist())
        return out

    return score


def _load_tok(folder: Path, device: str):
    from rftkit.model.reward_model import load_reward_model

    return load_reward_model(folder, device)[1]


def build_scaling(cfg: ScalingCfg | None, run_dir: Path, device: str) -> ScalingSpec | None:
    if cfg is None:
        return None
    models = {}
    for key, make in (("reward_model", rm_scorer), ("prm", prm_scorer)):
        path = getattr(cfg, key)
        if path is None:
            continue
        folder = resolve(path, run_dir)
        if _written_later(path, run_dir, folder):
            continue
        if not (folder / "model.json").is_file():
            raise ConfigError(f"eval.scaling.{key}: '{path}' is not a reward-model folder (no model.json in "
                              f"{folder}); a stage that trains one saves it to <run>/reward_models/<stage>")
        models[key] = make(folder, device)
    s = cfg.step_search
    search = None if s is None else StepSearch(width=s.width, expand=s.expand, separator=s.separator,
                                               guide=s.guide, rollouts=s.rollouts, max_steps=s.max_steps)
    if search is not None and search.guide == "prm":
        if cfg.prm is None:
            raise ConfigError("eval.scaling.step_search.guide: 'prm' needs eval.scaling.prm (a PRM folder); "
                              "or use guide: verifier")
        if "prm" not in models:  # the PRM is written by a later stage of this run
            search = None
    return ScalingSpec(reward_model=models.get("reward_model"), prm=models.get("prm"), curve=cfg.curve,
                       beam_width=cfg.beam_width, step_search=search)


__all__ = ["build_scaling", "prm_scorer", "resolve", "rm_scorer"]
