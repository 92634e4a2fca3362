"""Searches of test-time scaling (rftkit/eval/scaling.py): compute spent generating, not selecting.

Token-level beam search (`beam_width` W > 0). Every problem keeps W beams scored by their
cumulative log-prob under the policy at temperature 1 (no length normalization: longer
completions are not favoured, so a short eos-ended beam wins over a long one of equal
per-token quality). Each step expands every live beam with its top W next tokens and keeps
the best W of the W*W candidates, Hugging Face style: a candidate that ends (eos, a stop
string at the end of its text, as the rollout engine checks it, or max_new_tokens) is put
aside if it ranks among the best W, and the beam is refilled from the next best candidates
that continue. A problem stops when no beam is live or its best finished beam scores at
least the best live one (log-probs only fall, so no live beam can overtake it). The answer is
the finished beam with the highest cumulative log-prob. Width 1 is greedy decoding exactly
(tested). The policy runs through the built-in interface `model(ids, positions, key_mask,
cache)` with left-padded prompts, as in the rollout engine, all problems in one batch.

Step-level beam search (`step_search`, a `StepSearch`). Each problem keeps `width` partial
completions (first: the empty one). Each round samples `expand` continuations of every kept
partial (temperature 1) up to the next `separator`; a continuation that ends without the
separator (eos, a stop string, the token budget) finishes its candidate. Candidates are scored
by the guide:
    prm       the PRM's score of the last step; a finished candidate: the minimum over its
              steps (the PRM's outcome score, as in best-of-n by PRM); no steps: -inf
    verifier  an unfinished candidate: the share of `rollouts` completions sampled from it
              (temperature 1) that the verifier accepts (Math-Shepherd-style); a finished
              one: its own verdict score. It reads the reference answer, so it is an oracle:
              an upper bound on what a learned guide could do, not a deployable method.
Finished candidates are kept aside; the best `width` unfinished ones go on. The search stops
once `width` candidates have finished or after `max_steps` rounds; the answer is the finished
candidate with the best guide score (ties: the first to finish), or, if none finished, the
best kept partial. Every sampling call has its own seed, derived from `seed`, the problem's
index, the round and the beam, so a search is reproducible.

Metrics (means over problems; keys only for the searches that ran):
    beam@W                              share of problems whose beam answer verifies
    step_search/<guide>@<width>x<expand>  share whose step-search answer verifies
    step_search/samples                 sampled continuations per problem, expansions plus
                                        verifier rollouts (the compute spent)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from rftkit.eval.scaling import ScalingSpec, StepScorer, StepSearch
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.model.logprobs import left_pad
from rftkit.rollout.base import Generator, SamplingParams
from rftkit.tasks.base import verify
from rftkit.types import Problem

GUIDES = ("prm", "verifier")

Beam = tuple[float, list[int]]
"""A finished beam: (cumulative log-prob, completion token ids, eos included when it ended so)."""


def run_searches(generator: Generator, tok, problems: list[Problem], spec: ScalingSpec, *, max_new_tokens: int,
                 seed: int, stop: tuple[str, ...] = (), model=None) -> tuple[list[dict], dict[str, float]]:
    """Run the searches `spec` asks for -> (one dict per problem, summary); see the module docstring.

    Per problem: "beam" {text, score (verifier), parsed, logp (cumulative)} and "step_search"
    {text, score, parsed, guide (guide score), samples, rounds}. model: the policy behind
    `generator` for beam search (default: `generator.model`).
    """
    check_spec(spec)
    stop = tuple(stop)
    per_problem: list[dict] = [{} for _ in problems]
    summary: dict[str, float] = {}
    if spec.beam_width > 0:
        policy = model if model is not None else getattr(generator, "model", None)
        if policy is None:
            raise ValueError("eval.scaling.beam_width > 0 needs the policy model (run_searches(model=...))")
        prompts = [problem_prompt_ids(tok, p) for p in problems]
        beams = beam_search(policy, tok, prompts, spec.beam_width, max_new_tokens=max_new_tokens, stop=stop)
        for rec, p, found in zip(per_problem, problems, beams):
            logp, ids = found[0] if found else (0.0, [])
            rec["beam"] = {**_answer(p, tok.decode([i for i in ids if i != tok.eos_id])), "logp": logp}
        summary[f"beam@{spec.beam_width}"] = _mean([float(r["beam"]["score"] >= 1) for r in per_problem])
    search = spec.step_search
    if search is not None:
        for i, (rec, p) in enumerate(zip(per_problem, problems)):
            ctx = _Ctx(generator, tok, p, problem_prompt_ids(tok, p), search, spec.prm, max_new_tokens, stop,
                       (seed, i))
            best, samples, rounds = _step_search(ctx)
            guide = best.score if math.isfinite(best.score) else None
            rec["step_search"] = {**_answer(p, best.text), "guide": guide, "samples": samples, "rounds": rounds}
        key = f"step_search/{search.guide}@{search.width}x{search.expand}"
        summary[key] = _mean([float(r["step_search"]["score"] >= 1) for r in per_problem])
        summary["step_search/samples"] = _mean([float(r["step_search"]["samples"]) for r in per_problem])
    return per_problem, summary


def check_spec(spec: ScalingSpec) -> None:
    """Raise ValueError on a search setting that cannot run."""
    if spec.beam_width < 0:
        raise ValueError(f"eval.scaling.beam_width must be >= 0, got {spec.beam_width}")
    s = spec.step_search
    if s is None:
        return
    if s.guide not in GUIDES:
        raise ValueError(f"eval.scaling.step_search.guide must be one of {GUIDES}, got {s.guide!r}")
    if s.guide == "prm" and spec.prm is None:
        raise ValueError("step search with guide 'prm' needs a process reward model: set eval.scaling.prm")
    if min(s.width, s.expand, s.max_steps, s.rollouts if s.guide == "verifier" else 1) < 1 or not s.separator:
        raise ValueError("eval.scaling.step_search needs width, expand, max_steps (and rollouts for the "
                         f"verifier guide) >= 1 and a non-empty separator, got {s}")


# --- token-level beam search ------------------------------------------------------------------


@torch.no_grad()
def beam_search(model, tok, prompts: list[list[int]], width: int, *, max_new_tokens: int,
                stop: tuple[str, ...] = ()) -> list[list[Beam]]:
    """Per prompt (token ids, with bos), its finished beams, best (highest log-prob) first."""
    was_training = model.training
    model.eval()
    try:
        return _beam_search(model, tok, prompts, width, max_new_tokens, tuple(stop))
    finally:
        model.train(was_training)


def _beam_search(model, tok, prompts: list[list[int]], w: int, max_new: int, stop: tuple[str, ...]) -> list[list[Beam]]:
    p = len(prompts)
    if p == 0 or max_new <= 0:
        return [[] for _ in prompts]
    device = next(model.parameters()).device
    logits, cache, key_mask, next_pos, plen = _prefill(model, tok, prompts, w, max_new, device)
    seqs: list[list[list[int]]] = [[[] for _ in range(w)] for _ in range(p)]  # live beams' tokens
    scores = torch.full((p, w), -math.inf, dtype=torch.float64)
    scores[:, 0] = 0.0  # the W rows of a problem start identical: expand only the first
    finished: list[list[Beam]] = [[] for _ in range(p)]
    for t in range(max_new):
        top = logits.float().log_softmax(-1).topk(w, dim=-1)  # [P*W, W]
        cand = (scores.view(-1, 1) + top.values.double().cpu()).view(p, w * w)  # candidate j = beam j//W, rank j%W
        toks = top.indices.cpu().view(p, w * w)
        parents, nxt = [], []
        for i in range(p):
            live = _advance(tok, seqs[i], cand[i], toks[i], finished[i], w, t == max_new - 1, stop)
            if live and finished[i] and max(f[0] for f in finished[i]) >= live[0][2]:
                live = []  # no live beam can beat the best finished one: its log-prob only falls
            seqs[i] = [s for _, s, _ in live] + [[] for _ in range(w - len(live))]
            scores[i] = torch.tensor([sc for _, _, sc in live] + [-math.inf] * (w - len(live)), dtype=torch.float64)
            parents += [i * w + b for b, _, _ in live] + [i * w] * (w - len(live))
            nxt += [s[-1] for _, s, _ in live] + [tok.pad_id] * (w - len(live))
        if bool(torch.isinf(scores).all()):
            break
        cache.select(torch.tensor(parents, device=device))
        key_mask[:, plen + t] = True  # rows of one problem share the mask, so no reorder is needed
        ids = torch.tensor(nxt, device=device)[:, None]
        logits = model(ids, positions=next_pos + t, key_mask=key_mask, cache=cache)[:, -1]
    return [sorted(f, key=lambda b: -b[0]) for f in finished]


def _prefill(model, tok, prompts: list[list[int]], w: int, max_new: int, device):
    """Run the left-padded prompts once, then copy cache and logits to the W rows of each.
    -> logits [P*W, V], cache, key_mask [P*W, plen + max_new], next positions [P*W, 1], plen."""
    plen = max(len(r) for r in prompts)
    limit = model.cfg.max_seq_len if hasattr(model, "cfg") else plen + max_new
    if plen + max_new > limit:
        raise ValueError(f"prompt of {plen} tokens + max_new_tokens {max_new} exceeds the model context of {limit}")
    ids, key_mask, pos = left_pad(prompts, plen, max_new, tok.pad_id, device)
    cache = model.new_cache(len(prompts), plen + max_new)
    logits = model(ids, positions=pos, key_mask=key_mask, cache=cache)[:, -1]
    rows = torch.arange(len(prompts), device=device).repeat_interleave(w)
    cache.select(rows)
    return logits[rows], cache, key_mask[rows], pos[rows, -1:] + 1, plen


def _advance(tok, seqs: list[list[int]], cand: Tensor, toks: Tensor, finished: list[Beam], w: int, last: bool,
             stop: tuple[str, ...]) -> list[tuple[int, list[int], float]]:
    """One step of one problem: candidates best first; an ending one among the best W goes to
    `finished`; the first W that continue are returned as (parent beam, tokens, score)."""
    live: list[tuple[int, list[int], float]] = []
    for rank, j in enumerate(torch.argsort(cand, descending=True, stable=True).tolist()):
        score = float(cand[j])
        if score == -math.inf or len(live) == w:
            break
        seq = seqs[j // w] + [int(toks[j])]
        if last or seq[-1] == tok.eos_id or (stop and any(tok.decode(seq).endswith(s) for s in stop)):
            if rank < w:
                finished.append((score, seq))
        else:
            live.append((j // w, seq, score))
    return live


# --- step-level beam search -------------------------------------------------------------------


@dataclass
class _Partial:
    """A partial completion: its text, tokens generated so far, whether it ended, guide score."""

    text: str
    used: int = 0
    finished: bool = False
    score: float = 0.0


@dataclass(frozen=True)
class _Ctx:
    """What every call of one problem's step search needs; key: (seed, problem index)."""

    generator: Generator
    tok: object
    problem: Problem
    prompt: list[int]
    search: StepSearch
    prm: StepScorer | None
    max_new: int
    stop: tuple[str, ...]
    key: tuple[int, int]


def _step_search(ctx: _Ctx) -> tuple[_Partial, int, int]:
    """One problem's step-level beam search -> (answer, sampled continuations, rounds run)."""
    s = ctx.search
    kept, done, samples, rounds = [_Partial("")], [], 0, 0
    for rnd in range(s.max_steps):
        rounds = rnd + 1
        cands = [c for b, part in enumerate(kept) for c in _expand(ctx, part, _seed(*ctx.key, rnd, b))]
        samples += s.expand * len(kept) + _score(ctx, cands, rnd)
        done += [c for c in cands if c.finished]
        kept = sorted((c for c in cands if not c.finished), key=lambda c: -c.score)[: s.width]  # stable sort
        if len(done) >= s.width or not kept:
            break
    best = max(done or kept, key=lambda c: c.score)  # max keeps the first of equal scores
    return best, samples, rounds


def _expand(ctx: _Ctx, part: _Partial, seed: int) -> list[_Partial]:
    """`expand` continuations of `part` up to the next separator (or its end)."""
    sep = ctx.search.separator
    params = SamplingParams(n=ctx.search.expand, max_new_tokens=ctx.max_new - part.used, temperature=1.0,
                            stop=(sep, *ctx.stop), seed=seed)
    g = ctx.generator.generate([ctx.prompt + ctx.tok.encode(part.text)], params)
    out = []
    for text, n in zip(g.texts, g.mask.sum(1).long().tolist()):
        used = part.used + n
        step_ends = text.endswith(sep) and not any(text.endswith(x) for x in ctx.stop if x != sep)
        out.append(_Partial(part.text + text, used, finished=not step_ends or used >= ctx.max_new))
    return out


def _score(ctx: _Ctx, cands: list[_Partial], rnd: int) -> int:
    """Set each candidate's guide score; -> continuations sampled for it (verifier rollouts)."""
    if ctx.search.guide == "prm":
        steps = ctx.prm(ctx.problem, [c.text for c in cands])
        for c, st in zip(cands, steps):
            c.score = float((min(st) if c.finished else st[-1]) if len(st) else -math.inf)
        return 0
    sampled = 0
    for j, c in enumerate(cands):
        if c.finished:
            c.score = verify(ctx.problem, c.text).score
            continue
        params = SamplingParams(n=ctx.search.rollouts, max_new_tokens=ctx.max_new - c.used, temperature=1.0,
                                stop=ctx.stop, seed=_seed(*ctx.key, rnd, "rollout", j))
        g = ctx.generator.generate([ctx.prompt + ctx.tok.encode(c.text)], params)
        c.score = _mean([float(verify(ctx.problem, c.text + t).correct) for t in g.texts])
        sampled += ctx.search.rollouts
    return sampled


def _seed(*parts) -> int:
    """A sampling seed from the search seed and a call's place: stable across runs (a str
    seeds `random.Random` through SHA-512, not Python's salted hash)."""
    return random.Random("/".join(map(str, parts))).randrange(2**31)


def _answer(p: Problem, text: str) -> dict:
    v = verify(p, text)
    return {"text": text, "score": v.score, "parsed": v.parsed}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


__all__ = ["GUIDES", "beam_search", "check_spec", "run_searches"]
