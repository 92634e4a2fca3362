"""Multi-turn rollouts: the model and the environment take turns until the episode ends.

    gen, episodes = generate_rows(generator, tok, problems, prompts, params, limits, max_context)

Rows of problems without an environment are one engine call, exactly as before (a one-turn
task is the one-step case and pays nothing). Rows of problems with an `env` run the episode
loop, all live episodes in one engine call per turn (episodes end at different turns):

    turn k:  sample each live context (prompt + earlier turns + observations) up to the next
             eos / stop string;           tokens: mask 1, the engine's log-probs
             env.step(turn text) on worker threads with a timeout
             observation -> tokens appended with mask 0 (never trained), cut to
             limits.max_obs_tokens (counted)
    ends:    done | turn_limit (max_turns) | token_limit (max_tokens model tokens) |
             context_limit (the next turn would not fit the model's context) | truncated (a turn
             hit max_new_tokens) | env_error | env_timeout

Each turn re-prefills its contexts; our engine dedups identical ones but keeps no cache between
calls (prefix caching across turns is an engine feature, e.g. vLLM's). Turn k samples with
seed + 1_000_003 k, so an episode batch is reproducible. The returned `Generation` is laid
out like any other (right-padded, prompt then completion); its `texts` are what the verifier
scores (a multi-turn row's last model turn), the transcript is in the row's `Episode`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from rftkit.envs.base import StepResult, env_stops, make_env
from rftkit.model.hf_tokenizer import render_ids
from rftkit.rewards.pool import ThreadCalls
from rftkit.rollout.base import Generator, SamplingParams
from rftkit.types import Episode, Generation, Problem

TURN_SEED = 1_000_003
log = logging.getLogger("rftkit.envs")


@dataclass(frozen=True)
class EpisodeLimits:
    """max_turns: model turns per episode; max_tokens: model tokens per episode (0 = no limit
    beyond the turns); max_obs_tokens: an observation's tokens (longer ones are cut); timeout:
    seconds for one env.step; workers: env.step calls run at once."""

    max_turns: int = 4
    max_tokens: int = 0
    max_obs_tokens: int = 64
    timeout: float = 10.0
    workers: int = 8


@dataclass
class _Live:
    """An episode in progress: its context ids and the per-token lists after the prompt."""

    env: object | None
    ids: list[int]
    prompt_len: int
    logp: list[float]
    mask: list[float]
    episode: Episode
    truncated: bool = False
    model_tokens: int = 0
    done: bool = False


def generate_rows(generator: Generator, tok, problems: list[Problem], prompts: list[list[int]],
                  params: SamplingParams, limits: EpisodeLimits,
                  max_context: int) -> tuple[Generation, list[Episode | None]]:
    """N = len(problems) * params.n rows (row r = problem r // n). One-turn problems: the
    engine's Generation as is; with environments: episodes merged into the same layout."""
    if not any(p.env for p in problems):
        return generator.generate(prompts, params), [None] * (len(problems) * params.n)
    rows = [(i, p, ids) for i, (p, ids) in enumerate(zip(problems, prompts, strict=True)) for _ in range(params.n)]
    plain = [k for k, (_, p, _) in enumerate(rows) if not p.env]
    multi = [k for k, (_, p, _) in enumerate(rows) if p.env]
    out: dict[int, tuple] = {}
    if plain:
        gen = generator.generate([rows[k][2] for k in plain], replace(params, n=1))
        for j, k in enumerate(plain):
            n = int(gen.mask[j].sum())
            start = int(gen.prompt_lens[j])
            out[k] = (gen.tokens[j, : start + n].tolist(), gen.logp[j, : start + n].tolist(),
                      gen.mask[j, : start + n].tolist(), start, bool(gen.truncated[j]), gen.texts[j], None)
    lives = run_episodes(generator, tok, [rows[k][1] for k in multi], [rows[k][2] for k in multi],
                         replace(params, n=1, seed=params.seed + 17), limits, max_context)
    for k, lv in zip(multi, lives, strict=True):
        out[k] = (lv.ids, [0.0] * lv.prompt_len + lv.logp, [0.0] * lv.prompt_len + lv.mask, lv.prompt_len,
                  lv.truncated, lv.episode.answer, lv.episode)
    return _layout([out[k] for k in range(len(rows))], tok.pad_id)


def _layout(rows: list[tuple], pad_id: int) -> tuple[Generation, list[Episode | None]]:
    t = max(len(r[0]) for r in rows)
    gen = Generation(tokens=torch.tensor([r[0] + [pad_id] * (t - len(r[0])) for r in rows], dtype=torch.long),
                     logp=torch.tensor([r[1] + [0.0] * (t - len(r[1])) for r in rows]),
                     mask=torch.tensor([r[2] + [0.0] * (t - len(r[2])) for r in rows]),
                     prompt_lens=torch.tensor([r[3] for r in rows]), truncated=torch.tensor([r[4] for r in rows]),
                     texts=[r[5] for r in rows])
    return gen, [r[6] for r in rows]


def run_episodes(generator: Generator, tok, problems: list[Problem], prompts: list[list[int]],
                 params: SamplingParams, limits: EpisodeLimits, max_context: int) -> list[_Live]:
    """One episode per (problem, prompt ids), params.n must be 1. See the module docstring.
    Episodes whose environments end turns at different stop strings are sampled in separate
    engine calls (a game's "\n" must not cut a tool call's turn)."""
    lives = [_start(tok, p, ids) for p, ids in zip(problems, prompts, strict=True)]
    stops = [turn_stops(tok, params.stop, p) for p in problems]
    for turn in range(limits.max_turns):
        for lv in lives:
            if not lv.done and len(lv.ids) + params.max_new_tokens > max_context:
                _end(lv, "context_limit")
            elif not lv.done and limits.max_tokens and lv.model_tokens >= limits.max_tokens:
                _end(lv, "token_limit")  # the budget is spent: no empty turn
        by_stop: dict[tuple[str, ...], list[int]] = {}
        for i, lv in enumerate(lives):
            if not lv.done:
                by_stop.setdefault(stops[i], []).append(i)
        if not by_stop:
            break
        acting = []
        for k, (stop, rows) in enumerate(by_stop.items()):
            seed = params.seed + TURN_SEED * turn + 7919 * k
            gen = generator.generate([lives[i].ids for i in rows], replace(params, stop=stop, seed=seed))
            acting += [lives[i] for j, i in enumerate(rows) if _take_turn(tok, lives[i], gen, j, limits)]
        _step_envs(tok, acting, limits, max_context - params.max_new_tokens)
    for lv in lives:
        if not lv.done:
            _end(lv, "turn_limit")
    return lives


def turn_stops(tok, stop: tuple[str, ...], problem: Problem) -> tuple[str, ...]:
    """Strings that end a model turn: the rollout's, plus the environment's for plain-text
    prompts. A chat template ends every assistant turn with its end-of-turn token (eos), so an
    environment's plain-text stops (a game's "\n") do not apply to chat models."""
    if getattr(tok, "use_template", False):
        return tuple(stop)
    return tuple(dict.fromkeys(tuple(stop) + env_stops([problem])))


def _start(tok, problem: Problem, ids: list[int]) -> _Live:
    episode = Episode()
    try:
        env = make_env(problem)
        first = env.reset()
    except Exception as e:  # a broken environment ends its episode after the first turn, counted
        log.warning("environment %r of a %r problem failed to start: %s: %s", problem.env, problem.task,
                    type(e).__name__, e)
        env, first = None, None
        episode.info["env_errors"] = 1.0
    if first is not None:
        ids = render_ids(tok, first, problem.meta.get("tools"))
    return _Live(env, list(ids), len(ids), [], [], episode)


def _take_turn(tok, lv: _Live, gen: Generation, j: int, limits: EpisodeLimits) -> bool:
    """Append row j of `gen` as the model's turn; False when the episode ended with it."""
    start, n = int(gen.prompt_lens[j]), int(gen.mask[j].sum())
    ids, lps = gen.tokens[j, start : start + n].tolist(), gen.logp[j, start : start + n].tolist()
    text, truncated = gen.texts[j], bool(gen.truncated[j])
    if limits.max_tokens and lv.model_tokens + n > limits.max_tokens:
        keep = limits.max_tokens - lv.model_tokens
        ids, lps, truncated = ids[:keep], lps[:keep], True
        text = tok.decode([i for i in ids if i != tok.eos_id])
        lv.episode.end = "token_limit"
    lv.ids += ids
    lv.logp += lps
    lv.mask += [1.0] * len(ids)
    lv.model_tokens += len(ids)
    lv.episode.segments.append((ids, True, text))
    lv.episode.answer = text
    if truncated:
        lv.truncated = True
        _end(lv, lv.episode.end if lv.episode.end == "token_limit" else "truncated")
        return False
    if lv.env is None:
        _end(lv, "env_error")
        return False
    return True


def _step_envs(tok, acting: list[_Live], limits: EpisodeLimits, room: int) -> None:
    """env.step for each acting episode, at once on worker threads, each with the timeout."""
    if not acting:
        return
    calls = [(i, lv.env.step, (lv.episode.answer,)) for i, lv in enumerate(acting)]
    results = ThreadCalls(calls, workers=limits.workers, timeout=limits.timeout).results()
    for i, lv in enumerate(acting):
        status, value = results[i]
        if status == "timeout":
            lv.episode.info["env_timeouts"] = lv.episode.info.get("env_timeouts", 0.0) + 1
            _end(lv, "env_timeout")
        elif status != "ok" or not isinstance(value, StepResult) or not _finite(value.reward):
            what = value if status != "ok" else f"step returned {type(value).__name__}, expected a StepResult " \
                "with a finite reward"
            log.warning("environment %r: %s", type(lv.env).__name__, what)
            lv.episode.info["env_errors"] = lv.episode.info.get("env_errors", 0.0) + 1
            _end(lv, "env_error")
        else:
            _apply(tok, lv, value, limits, room)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and x == x and abs(x) != float("inf")


def _apply(tok, lv: _Live, result: StepResult, limits: EpisodeLimits, room: int) -> None:
    """Record the env's reward and info; append its observation unless done. `room`: the
    longest context a next turn can start from; an observation past it ends the episode
    (context_limit) without being appended, so a row never outgrows the model's context."""
    lv.episode.turn_rewards.append(float(result.reward))
    for k, v in (result.info or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v):
            lv.episode.info[k] = lv.episode.info.get(k, 0.0) + float(v)
    if result.done:
        _end(lv, "done")
        return
    role = getattr(lv.env, "observation_role", "tool")
    ended_by_eos = bool(lv.ids) and lv.ids[-1] == tok.eos_id
    obs = observation_ids(tok, str(result.observation), role, ended_by_eos)
    if len(obs) > limits.max_obs_tokens:  # cut the text, not the rendering: a chat turn keeps its closing tokens
        overhead = len(observation_ids(tok, "", role, ended_by_eos))
        text = tok.decode(tok.encode(str(result.observation))[: max(0, limits.max_obs_tokens - overhead)])
        obs = observation_ids(tok, text, role, ended_by_eos)[: limits.max_obs_tokens]
        lv.episode.obs_truncated += 1
    if len(lv.ids) + len(obs) > room:
        _end(lv, "context_limit")
        return
    lv.ids += obs
    lv.logp += [0.0] * len(obs)
    lv.mask += [0.0] * len(obs)
    lv.episode.segments.append((obs, False, tok.decode(obs)))


def observation_ids(tok, text: str, role: str = "tool", eos_emitted: bool = True) -> list[int]:
    """An observation's tokens: a chat tokenizer renders it as a `role` turn of its template
    (`HFTokenizer.observation_ids`; `eos_emitted`: the model's turn already ended with the
    end-of-turn token, else the template's is added), the built-in tokenizer appends the text."""
    if hasattr(tok, "observation_ids"):
        return tok.observation_ids(text, role, eos_emitted=eos_emitted)
    return tok.encode(text)


def _end(lv: _Live, why: str) -> None:
    if len(lv.episode.turn_rewards) < lv.episode.turns:  # the last turn got no env reward
        lv.episode.turn_rewards += [0.0] * (lv.episode.turns - len(lv.episode.turn_rewards))
    lv.episode.end = why
    lv.done = True


TOOL_FAILURES = ("tool_errors", "tool_malformed", "tool_unknown", "tool_timeouts")
"""Info keys (summed per episode by tool environments) that count a failed tool call."""


def episode_stats(episodes: list[Episode]) -> dict[str, float]:
    """Means over episodes: turns, every numeric info key, observations cut, the share of each
    end reason (end/<reason>), and tool_error_rate = failed calls / calls when tools were
    called. Keys without a prefix; training logs them as env/<key>, evaluation as episode/<key>."""
    if not episodes:
        return {}
    n = len(episodes)
    out = {"turns_mean": sum(e.turns for e in episodes) / n,
           "obs_truncated": float(sum(e.obs_truncated for e in episodes))}
    for key in sorted({k for e in episodes for k in e.info}):
        out[f"{key}_mean"] = sum(e.info.get(key, 0.0) for e in episodes) / n
    for why in sorted({e.end for e in episodes}):
        out[f"end/{why}"] = sum(e.end == why for e in episodes) / n
    calls = sum(e.info.get("tool_calls", 0.0) for e in episodes)
    if calls:
        out["tool_error_rate"] = sum(e.info.get(k, 0.0) for e in episodes for k in TOOL_FAILURES) / calls
    return out
