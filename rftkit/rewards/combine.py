"""Per-sample combination of component scores into the trained reward (the RewardSpec formula).

    term_c,i  = weight_c * score_c,i          (primary: weight * cosine(correct_i, L_i) if cosine)
    total_i   = sum_c term_c,i  if every gate component scored >= 1  else  gate_penalty
    total_i  += overlong_i                     (DAPO, if set)

`scores` are mutated only by adding the "cosine" / "overlong" entries, so they are logged too.
"""

from __future__ import annotations

from rftkit.rewards.shaping import cosine_length_reward, overlong_penalty
from rftkit.rewards.spec import RewardSpec, RewardVerdict
from rftkit.types import Problem, Verdict


def _need_lengths(spec: RewardSpec, lengths: list[int] | None, n: int) -> list[int]:
    if lengths is None:
        raise ValueError("this RewardSpec uses cosine or overlong shaping: pass lengths (completion tokens)")
    if len(lengths) != n:
        raise ValueError(f"{len(lengths)} lengths for {n} samples")
    return [int(x) for x in lengths]


def combine(spec: RewardSpec, problems: list[Problem], completions: list[str], verdicts: dict[str, list[Verdict]],
            scores: dict[str, list[float]], lengths: list[int] | None) -> list[RewardVerdict]:
    """One RewardVerdict per sample: the primary component's verdict plus the shaped total."""
    n, primary = len(problems), spec.primary_name
    terms = {c.name: [c.weight * s for s in scores[c.name]] for c in spec.components}
    if spec.cosine is not None:
        cs = spec.cosine
        lens = _need_lengths(spec, lengths, n)
        correct = [s >= 1.0 for s in scores[primary]]
        scores["cosine"] = cosine_length_reward(
            correct, lens, max_len=cs.max_len, r0_correct=cs.r0_correct, rL_correct=cs.rL_correct,
            r0_wrong=cs.r0_wrong, rL_wrong=cs.rL_wrong, r_exceed=cs.r_exceed, margin=cs.margin,
            texts=completions, repetition_max_penalty=cs.repetition_penalty, ngram=cs.ngram)
        weight = next(c.weight for c in spec.components if c.name == primary)
        terms[primary] = [weight * r for r in scores["cosine"]]
    if spec.overlong is not None:
        lens = _need_lengths(spec, lengths, n)
        scores["overlong"] = overlong_penalty(lens, spec.overlong.max_len, spec.overlong.cache_len)
    gates = [c.name for c in spec.components if c.gate]
    out = []
    for i in range(n):
        failed = [g for g in gates if scores[g][i] < 1.0]
        total = spec.gate_penalty if failed else sum(t[i] for t in terms.values())
        total += scores["overlong"][i] if spec.overlong is not None else 0.0
        v = verdicts[primary][i]
        reason = v.reason + (f"; gate {', '.join(failed)} failed" if failed else "")
        out.append(RewardVerdict(min(max(float(v.score), 0.0), 1.0), v.parsed, reason, reward=float(total),
                                 components={name: s[i] for name, s in scores.items()}))
    return out


__all__ = ["combine"]
