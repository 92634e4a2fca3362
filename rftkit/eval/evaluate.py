"""Evaluation of a policy on a list of problems (definitions: docs/evaluation.md).

For each problem: one greedy completion, and n sampled ones at the given temperature. The
summary holds, averaged over problems:

    greedy_acc, reward_mean, pass@k (unbiased; k in ks)                      always
    avg@n, maj@k (k in ks), pass@k for every k <= n, best_of_n (by verifier),
    distinct_answers, distinct_1..3, len_mean, truncated_frac, format_frac   extended=True
    entropy (mean token entropy of the samples)                              model given
    bon/<verifier|logprob|rm|prm>@n, wmaj/<logprob|rm>@n, and with
    spec.curve curve/<selector>@k for k = 1, 2, 4, ..., n                    scaling given
    the search keys of rftkit.eval.search                                    scaling searches

and the accuracy metrics (greedy_acc, reward_mean, pass@k for k in ks, and with
extended=True avg@n and maj@k) again per difficulty (suffix `/d<level>`) and, when the
problems come from several sources, per source (suffix `/src=<label>`). The default keeps
the summary of earlier versions (plus the source breakdown), so tables built from it stay
narrow. Per-problem records (samples with their verdicts, lengths, format, mean token
log-prob, distinct-n; with scaling the RM / PRM scores and the selectors' results under
"scaling") are always complete, for eval/<stage>_<split>.jsonl; `summarize(records, n, ks,
extended=True)` rebuilds the extended summary from them (all but entropy and search keys).
Selectors and curves: rftkit/eval/selection.py. A problem with images adds "images" to its
record (`image_records`: key, size and a PNG data URI each) so the report can show what the
model saw; text-only records are unchanged.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable

import numpy as np

from rftkit.algos.groups import group_rows
from rftkit.envs.episodes import EpisodeLimits, episode_stats, generate_rows
from rftkit.eval.metrics import avg_at_n, best_of_n, distinct_answers, distinct_n, maj_at_k
from rftkit.eval.passk import pass_at_k
from rftkit.eval.scaling import ScalingSpec
from rftkit.eval.selection import problem_scaling
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.rollout.base import Generator, SamplingParams
from rftkit.tasks.base import verify
from rftkit.types import ANSWER_MARKER, Episode, Image, Problem

Progress = Callable[[str, int, int], None]
"""(phase, done, total), called as evaluation goes: "greedy" and "sampling" (completions,
each called at its start and end: one generate call each, so that the sampled stream, and the
numbers, stay those of a single call) then "scoring" (problems, after each one)."""

DISTINCT_NS = (1, 2, 3)
THUMB_MAX = 128
"""Longest side (px) of an image as stored in a record; larger images are subsampled to it, so
a record stays small whatever the dataset's resolution (a 32x32 frame of drawn shapes is a few
hundred bytes of base64, 32x32 noise ~4 KB)."""


def encode_prompts(tok, problems: list[Problem]) -> list[list[int]]:
    return [problem_prompt_ids(tok, p) for p in problems]


def evaluate(generator: Generator, tok, problems: list[Problem], *, n: int, ks: list[int],
             temperature: float, max_new_tokens: int, seed: int, extended: bool = False, model=None,
             stop: tuple[str, ...] = (), progress: Progress | None = None,
             scaling: ScalingSpec | None = None, episodes: EpisodeLimits | None = None,
             context: int = 1 << 30) -> tuple[dict[str, float], list[dict]]:
    """Returns (summary, records); see the module docstring for the keys.

    stop: completions end at the first of these strings, as in training (`rollout.stop`).

    extended: add maj@k, avg@n, best-of-n, the pass@k curve, diversity and behaviour.
    model: the policy behind `generator`; when given, `entropy` (mean token entropy of the
    sampled completions at `temperature`) is added.
    progress: told each phase's progress (`Progress`); a UI passes it, eval/ draws nothing.
    scaling: test-time scaling (rftkit/eval/scaling.py): selectors over the n samples (its
    reward_model and prm are called once per problem on the sampled texts), curves, searches.
    episodes / context: budgets of multi-turn problems (those naming an environment) and the
    model's context; each sample is then an episode, its last model turn is verified and its
    transcript, turns and end reason go into the record (pass@k over episodes).
    """
    tick = progress or _silent
    prompts, stop, p_count = encode_prompts(tok, problems), tuple(stop), len(problems)
    tick("greedy", 0, p_count)
    limits = episodes or EpisodeLimits()
    greedy, greedy_eps = generate_rows(generator, tok, problems, prompts, SamplingParams(
        n=1, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed, stop=stop), limits, context)
    tick("greedy", p_count, p_count)
    tick("sampling", 0, p_count * n)
    sampled, sampled_eps = generate_rows(generator, tok, problems, prompts, SamplingParams(
        n=n, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + 1, stop=stop), limits, context)
    tick("sampling", p_count * n, p_count * n)
    lengths = sampled.mask.sum(1).tolist()
    truncated = sampled.truncated.tolist()
    # mean token log-prob under the sampling policy, Shape: [N]; the eos token counts
    logp_mean = ((sampled.logp * sampled.mask).sum(1) / sampled.mask.sum(1).clamp(min=1)).tolist()
    records = []
    for i, p in enumerate(problems):
        rows = range(i * n, (i + 1) * n)
        records.append(problem_record(p, greedy.texts[i], [sampled.texts[r] for r in rows],
                                      [int(lengths[r]) for r in rows], [bool(truncated[r]) for r in rows],
                                      tok, [float(logp_mean[r]) for r in rows]))
        if p.env:
            add_episodes(records[-1], greedy_eps[i], [sampled_eps[r] for r in rows])
        if scaling is not None:
            add_scaling(records[-1], p, scaling)
        tick("scoring", i + 1, p_count)
    summary = summarize(records, n, ks, extended=extended)
    if model is not None:
        from rftkit.eval.entropy import policy_entropy

        summary["entropy"] = policy_entropy(model, sampled, temperature=temperature)
    if scaling is not None and (scaling.beam_width or scaling.step_search is not None):
        from rftkit.eval.search import run_searches

        per_problem, search_summary = run_searches(generator, tok, problems, scaling, max_new_tokens=max_new_tokens,
                                                   seed=seed + 2, stop=stop, model=model)
        for r, found in zip(records, per_problem):
            r["search"] = found
        summary.update(search_summary)
    return summary, records


def add_episodes(record: dict, greedy, sampled: list) -> None:
    """Multi-turn problems: each completion's segments ([text, written by the model] in order),
    turns, end reason, env info and per-turn env rewards."""
    for out, ep in zip([record["greedy"], *record["samples"]], [greedy, *sampled], strict=True):
        if ep is not None:
            out.update(segments=[[text, model] for _, model, text in ep.segments], turns=ep.turns, end=ep.end,
                       env=dict(ep.info), turn_rewards=list(ep.turn_rewards))


def problem_record(p: Problem, greedy_text: str, texts: list[str], lengths: list[int], truncated: list[bool],
                   tok, logp_mean: list[float]) -> dict:
    """One line of eval/<stage>_<split>.jsonl: the problem, its greedy and sampled completions."""
    g = verify(p, greedy_text)
    verdicts = [verify(p, t) for t in texts]
    rec = {
        "prompt": p.prompt, "answer": p.answer, "task": p.task, "source": p.source or p.task,
        "difficulty": p.difficulty,
        "greedy": {"text": greedy_text, "score": g.score, "parsed": g.parsed, "reason": g.reason},
        "samples": [{"text": t, "score": v.score, "parsed": v.parsed, "reason": v.reason, "len": ln,
                     "truncated": tr, "format": ANSWER_MARKER in t, "logp_mean": lp}
                    for t, v, ln, tr, lp in zip(texts, verdicts, lengths, truncated, logp_mean)],
        "n_correct": sum(v.correct for v in verdicts),
        "distinct_n": [distinct_n([tok.encode(t) for t in texts], d) for d in DISTINCT_NS],
    }
    if p.images:  # text-only records get no key and no work
        rec["images"] = image_records(p.images)
    return rec


def image_records(images: tuple[Image, ...]) -> list[dict]:
    """A record's "images", in the problem's order: {"key": 10 hex digits, "size": [H, W] of the
    original, "png": "data:image/png;base64,..."}. The PNG holds the pixels (lossless) when both
    sides are <= THUMB_MAX, else every s-th row and column (nearest neighbour) with s the
    smallest step that fits; the report enlarges small frames itself (CSS), not here."""
    out = []
    for im in images:
        step = -(-max(im.size) // THUMB_MAX)
        out.append({"key": f"{im.key:010x}", "size": list(im.size),
                    "png": png_data_uri(im.pixels[::step, ::step])})
    return out


def png_data_uri(pixels: np.ndarray) -> str:
    """An 8-bit RGB PNG of pixels uint8 [H, W, 3] as a data URI, written with zlib alone (no
    imaging library needed at evaluation time): IHDR, one IDAT of filter-0 rows, IEND."""
    h, w = pixels.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(pixels).reshape(h, w * 3)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def add_scaling(rec: dict, p: Problem, spec: ScalingSpec) -> None:
    """Score a record's samples with the spec's RM ("rm_scores" [n]) and PRM ("prm_scores":
    per sample, one score per step), and store the selectors' results under "scaling"."""
    texts = [s["text"] for s in rec["samples"]]
    if spec.reward_model is not None:
        rec["rm_scores"] = [float(x) for x in spec.reward_model(p, texts)]
    if spec.prm is not None:
        rec["prm_scores"] = [[float(x) for x in steps] for steps in spec.prm(p, texts)]
    rec["scaling"] = record_scaling(rec, curve=spec.curve)


def record_scaling(rec: dict, curve: bool = True) -> dict[str, float]:
    """The selectors' results of one record, from its samples and stored RM / PRM scores."""
    samples = rec["samples"]
    return problem_scaling([s["score"] >= 1 for s in samples], [s["parsed"] for s in samples],
                           [s["logp_mean"] for s in samples], rec.get("rm_scores"), rec.get("prm_scores"), curve)


def problem_scores(r: dict, n: int, ks: list[int], extended: bool = False) -> dict[str, float]:
    """One record's greedy_acc, reward_mean, pass@k (k in ks); extended: also avg@n and maj@k."""
    parsed, correct = [s["parsed"] for s in r["samples"]], [s["score"] >= 1 for s in r["samples"]]
    out = {"greedy_acc": float(r["greedy"]["score"] >= 1), "reward_mean": sum(s["score"] for s in r["samples"]) / n}
    if extended:
        out["avg@n"] = avg_at_n(correct)
    for k in ks:
        if k <= n:
            out[f"pass@{k}"] = pass_at_k(n, r["n_correct"], k)
            if extended:
                out[f"maj@{k}"] = maj_at_k(parsed, correct, k)
    return out


def accuracy_metrics(scores: list[dict[str, float]], suffix: str = "") -> dict[str, float]:
    """Mean of `problem_scores` over problems, each key with `suffix`."""
    return {f"{k}{suffix}": _mean([s[k] for s in scores]) for k in scores[0]} if scores else {}


def behaviour_metrics(rs: list[dict]) -> dict[str, float]:
    """Diversity and behaviour over records: distinct answers / n-grams, length, truncation, format."""
    samples = [s for r in rs for s in r["samples"]]
    out = {"best_of_n": _mean([best_of_n([s["score"] for s in r["samples"]]) for r in rs]),
           "distinct_answers": _mean([distinct_answers([s["parsed"] for s in r["samples"]]) for r in rs])}
    if rs and "distinct_n" in rs[0]:
        out.update({f"distinct_{d}": _mean([r["distinct_n"][j] for r in rs]) for j, d in enumerate(DISTINCT_NS)})
    if samples and "len" in samples[0]:
        out["len_mean"] = _mean([s["len"] for s in samples])
        out["truncated_frac"] = _mean([float(s["truncated"]) for s in samples])
    out["format_frac"] = _mean([float(s.get("format", ANSWER_MARKER in s["text"])) for s in samples])
    return out


def summarize(records: list[dict], n: int, ks: list[int], extended: bool = False) -> dict[str, float]:
    """The summary of `evaluate` from its records: overall, per difficulty and per source."""
    scores = [problem_scores(r, n, ks, extended) for r in records]
    sources = [r.get("source") or r["task"] for r in records]
    groups = {f"/d{d}": rows for d, rows in group_rows(r["difficulty"] for r in records).items()}
    if len(set(sources)) > 1:
        groups.update({f"/src={s}": rows for s, rows in group_rows(sources).items()})
    out = accuracy_metrics(scores)
    if extended:
        out.update({f"pass@{k}": _mean([pass_at_k(n, r["n_correct"], k) for r in records]) for k in range(1, n + 1)})
        out.update(behaviour_metrics(records))
    out.update(episode_summary(records))
    if records and "scaling" in records[0]:
        out.update({k: _mean([r["scaling"][k] for r in records]) for k in records[0]["scaling"]})
    for suffix, rows in sorted(groups.items()):
        out.update(accuracy_metrics([scores[i] for i in rows], suffix))
    return out


def episode_summary(records: list[dict]) -> dict[str, float]:
    """Multi-turn problems' sampled episodes: episode/turns_mean, episode/tool_calls_mean, ...
    (rftkit.envs.episodes.episode_stats over the records' samples)."""
    eps = [Episode(segments=[([], True, "")] * s["turns"], end=s["end"], info=s["env"])
           for r in records for s in r["samples"] if "turns" in s]
    return {f"episode/{k}": v for k, v in episode_stats(eps).items() if not k.startswith("obs_")}


def headline_keys(summary: dict[str, float], ks: list[int]) -> list[str]:
    """The overall keys worth a table column: no breakdowns, pass@k / maj@k only for k in ks."""
    keep = {"greedy_acc", "avg@n", *(f"pass@{k}" for k in ks), *(f"maj@{k}" for k in ks)}
    scaling = ("bon/", "wmaj/", "beam@", "step_search/")  # test-time scaling at n (curves stay in the files)
    return [k for k in summary if k in keep or k.startswith(scaling)]


def _silent(phase: str, done: int, total: int) -> None:
    pass


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
