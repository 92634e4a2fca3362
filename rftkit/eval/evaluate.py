"""Evaluation of a policy on a list of problems: greedy accuracy and unbiased pass@k.

For each problem: one greedy completion, and n sampled ones at the given temperature;
pass@k for every k <= n uses the unbiased estimator. Results are broken down by difficulty,
and per-problem records (samples with their verdicts) are returned for the run dir.
"""

from __future__ import annotations

from collections import defaultdict

from rftkit.eval.passk import pass_at_k
from rftkit.rollout.base import Generator, SamplingParams
from rftkit.tasks.base import verify
from rftkit.types import Problem


def encode_prompts(tok, problems: list[Problem]) -> list[list[int]]:
    return [[tok.bos_id] + tok.encode(p.prompt) for p in problems]


def evaluate(generator: Generator, tok, problems: list[Problem], *, n: int, ks: list[int],
             temperature: float, max_new_tokens: int, seed: int) -> tuple[dict[str, float], list[dict]]:
    """Returns ({"greedy_acc", "pass@k"..., "reward_mean", "<metric>/d<difficulty>"...}, records)."""
    prompts = encode_prompts(tok, problems)
    greedy = generator.generate(prompts, SamplingParams(n=1, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed))
    sampled = generator.generate(prompts, SamplingParams(n=n, max_new_tokens=max_new_tokens,
                                                         temperature=temperature, seed=seed + 1))
    records = []
    for i, p in enumerate(problems):
        g = verify(p, greedy.texts[i])
        texts = sampled.texts[i * n : (i + 1) * n]
        verdicts = [verify(p, t) for t in texts]
        records.append({
            "prompt": p.prompt, "answer": p.answer, "task": p.task, "difficulty": p.difficulty,
            "greedy": {"text": greedy.texts[i], "score": g.score, "parsed": g.parsed, "reason": g.reason},
            "samples": [{"text": t, "score": v.score, "parsed": v.parsed, "reason": v.reason}
                        for t, v in zip(texts, verdicts)],
            "n_correct": sum(v.correct for v in verdicts),
        })
    return summarize(records, n, ks), records


def summarize(records: list[dict], n: int, ks: list[int]) -> dict[str, float]:
    """Mean metrics over records, overall and per difficulty (suffix '/d<level>')."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[""].append(r)
        groups[f"/d{r['difficulty']}"].append(r)
    out: dict[str, float] = {}
    for suffix, rs in sorted(groups.items()):
        out[f"greedy_acc{suffix}"] = sum(r["greedy"]["score"] >= 1 for r in rs) / len(rs)
        out[f"reward_mean{suffix}"] = sum(s["score"] for r in rs for s in r["samples"]) / (len(rs) * n)
        for k in ks:
            if k <= n:
                out[f"pass@{k}{suffix}"] = sum(pass_at_k(n, r["n_correct"], k) for r in rs) / len(rs)
    return out
