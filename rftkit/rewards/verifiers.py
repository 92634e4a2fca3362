"""Rule-based verifiers, registered in VERIFIERS: `(problem, completion, *, knobs) -> Verdict`.

    numeric           |pred - gold| <= max(abs_tol, rel_tol * max(|pred|, |gold|)), Decimal arithmetic
    multiple_choice   the chosen letter (or option text, with meta["choices"]) equals the answer
    normalized_exact  SQuAD-normalized answer equals the reference or one of meta["aliases"]
    r1_format         1 iff "<think>...</think><answer>...</answer>" and nothing around (R1 template)
    answer_format     1 iff an answer can be extracted (tag, \\boxed, '####', or the '#' marker)
    regex             re.search / re.fullmatch of knob `pattern` (or meta["pattern"]); runs in a process
    list_partial      fraction of list elements right (ordered by position, or as a multiset)
    similarity        difflib.SequenceMatcher(None, pred, gold).ratio() (SWE-RL, arXiv:2502.18449)

All are pure and never raise on model output; each is linear in the completion except
`similarity` (quadratic in the worst case: inputs over `max_chars` score 0) and `regex`
(user patterns can backtrack: it runs in a worker process with a timeout by default).
Knobs come from the component's params; `problem.meta` may override per problem where noted.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from decimal import Decimal, localcontext

from rftkit.rewards.extract import extract_answer, last_number, normalize_text, parse_number
from rftkit.rewards.spec import isolation
from rftkit.tasks.base import VERIFIERS
from rftkit.types import Problem, Verdict


def _short(s: str | None, n: int = 200) -> str | None:
    return None if s is None else (s if len(s) <= n else s[:n] + "...")


def _answer_or_last_line(completion: str) -> str | None:
    region, _ = extract_answer(completion, marker=True)
    if region is not None:
        return region
    lines = [ln for ln in completion[-10_000:].strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else None


@VERIFIERS.register("numeric")
def verify_numeric(problem: Problem, completion: str, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Verdict:
    """Numeric answer within tolerance (meta["rel_tol"] / meta["abs_tol"] override the knobs).
    The reference may be a GSM8K solution ("... #### 72"). The prediction is the extracted
    answer (tag, \\boxed, '####', '#'), else the last number of the completion."""
    gold_text, _ = extract_answer(problem.answer)
    gold = parse_number(gold_text if gold_text is not None else problem.answer)
    if gold is None:
        return Verdict(0.0, None, f"reference {_short(problem.answer, 50)!r} is not a number")
    region, _ = extract_answer(completion, marker=True)
    pred = parse_number(region) if region is not None else None
    if pred is None:
        last = last_number(region if region is not None else completion)
        pred = parse_number(last) if last is not None else None
    if pred is None:
        return Verdict(0.0, _short(region), "no number found")
    rel, ab = problem.meta.get("rel_tol", rel_tol), problem.meta.get("abs_tol", abs_tol)
    with localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 50, 999_999_999_999_999_999, -999_999_999_999_999_999
        ok = abs(pred - gold) <= max(Decimal(ab), Decimal(rel) * max(abs(pred), abs(gold)))
    return Verdict(1.0 if ok else 0.0, _short(str(pred)), "correct" if ok else f"expected {_short(str(gold), 50)}")


_LETTER_PATTERNS = (r"(?i:answer)\s*(?:(?i:is)\s*)?:?\s*\(?([{L}])\)?(?![A-Za-z0-9])",  # "The answer is (B)"
                    r"^\s*\(?([{L}])\)?[.:]?\s*$",  # the letter alone: "B", "(B)", "B."
                    r"^\s*(?:\(([{L}])\)|([{L}])[.)])\s")  # "(B) 42", "B. 42"


def _choice_letter(completion: str, letters: str, choices: list[str] | None) -> str | None:
    region = _answer_or_last_line(completion)
    if region is None:
        return None
    region = region[:1000]
    if choices:
        norm = normalize_text(region)
        for letter, text in zip(letters, choices):
            if norm and norm == normalize_text(str(text)):
                return letter
    for pat in _LETTER_PATTERNS:
        hits = re.findall(pat.replace("{L}", re.escape(letters)), region.strip(), flags=re.MULTILINE)
        if hits:
            last = hits[-1]
            return "".join(last) if isinstance(last, tuple) else last
    return None


@VERIFIERS.register("multiple_choice")
def verify_multiple_choice(problem: Problem, completion: str, *, letters: str = "ABCDEFGHIJ") -> Verdict:
    """The chosen option letter equals the answer ("B", or an option text when meta["choices"]
    lists the options in order). Reads "<answer>B</answer>", "\\boxed{B}", "The answer is (B)",
    or a last line "B." / "(B)"."""
    choices = problem.meta.get("choices")
    gold = problem.answer.strip().strip("()").upper()
    if choices and gold not in letters[: len(choices)]:
        want = normalize_text(problem.answer)
        matches = [letters[i] for i, c in enumerate(choices) if normalize_text(str(c)) == want]
        gold = matches[0] if matches else gold
    pred = _choice_letter(completion, letters, choices)
    if pred is None:
        return Verdict(0.0, None, "no option letter found")
    return Verdict(1.0 if pred == gold else 0.0, pred, "correct" if pred == gold else f"expected {gold}")


@VERIFIERS.register("normalized_exact")
def verify_normalized_exact(problem: Problem, completion: str) -> Verdict:
    """Normalized extracted answer (else the last non-empty line) equals the reference or an alias
    in meta["aliases"]: lowercase, punctuation and articles removed, whitespace collapsed."""
    pred = _answer_or_last_line(completion)
    if pred is None:
        return Verdict(0.0, None, "empty completion")
    golds = {normalize_text(a) for a in [problem.answer, *problem.meta.get("aliases", [])]}
    ok = normalize_text(pred) in golds
    return Verdict(1.0 if ok else 0.0, _short(pred), "correct" if ok else f"expected {_short(problem.answer, 50)!r}")


def r1_format_ok(text: str) -> tuple[bool, str]:
    """Exactly one <think>...</think> then exactly one <answer>...</answer>, nothing around them."""
    t = text.strip()
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        if t.count(tag) != 1:
            return False, f"expected one {tag}, found {t.count(tag)}"
    if not t.startswith("<think>"):
        return False, "does not start with <think>"
    rest = t[t.find("</think>") + len("</think>") :].strip()
    if not (rest.startswith("<answer>") and rest.endswith("</answer>")):
        return False, "expected <answer>...</answer> right after </think> and nothing after"
    if not rest[len("<answer>") : -len("</answer>")].strip():
        return False, "empty answer"
    return True, "format ok"


@VERIFIERS.register("r1_format")
def verify_r1_format(problem: Problem, completion: str) -> Verdict:
    """DeepSeek-R1 template check. When the prompt already ends with "<think>" (the R1 prompt
    template opens it), the completion is read as if it started with it."""
    text = completion
    if problem.prompt.rstrip().endswith("<think>") and not completion.lstrip().startswith("<think>"):
        text = "<think>" + completion
    ok, why = r1_format_ok(text)
    return Verdict(1.0 if ok else 0.0, None, why)


@VERIFIERS.register("answer_format")
def verify_answer_format(problem: Problem, completion: str, *, marker: bool = True) -> Verdict:
    """1 iff a non-empty answer can be extracted (ReFT-style partial credit for a parsable answer)."""
    region, where = extract_answer(completion, marker=marker)
    ok = bool(region)
    return Verdict(1.0 if ok else 0.0, _short(region), f"answer found ({where})" if ok else "no extractable answer")


@VERIFIERS.register("regex")
@isolation("process")
def verify_regex(problem: Problem, completion: str, *, pattern: str = "", fullmatch: bool = False,
                 on_answer: bool = False) -> Verdict:
    """1 iff `pattern` (or meta["pattern"]) matches the completion (or its extracted answer):
    re.search, or re.fullmatch with fullmatch=True; DOTALL | MULTILINE."""
    pat = problem.meta.get("pattern", pattern)
    if not pat:
        return Verdict(0.0, None, "no pattern (set params.pattern or meta['pattern'])")
    text = (extract_answer(completion, marker=True)[0] or "") if on_answer else completion
    rx = re.compile(pat, re.DOTALL | re.MULTILINE)
    m = rx.fullmatch(text) if fullmatch else rx.search(text)
    return Verdict(1.0 if m else 0.0, _short(m.group(0)) if m else None, "match" if m else "no match")


def _items(s: str, limit: int = 10_000) -> list[str]:
    s = s.strip()
    if s.startswith("[") and s.endswith("]"):
        try:
            val = json.loads(s)
            if isinstance(val, list):
                return [normalize_text(str(x)) for x in val[:limit]]
        except (ValueError, RecursionError):
            pass
        s = s[1:-1]
    return [normalize_text(x) for x in re.split(r"[,;\s]+", s) if x.strip()][:limit]


@VERIFIERS.register("list_partial")
def verify_list_partial(problem: Problem, completion: str, *, ordered: bool = True) -> Verdict:
    """Partial credit for a list answer: hits / max(len(gold), len(pred)); hits are equal items
    at equal positions (ordered) or the multiset intersection. Items split on , ; or spaces, or
    a JSON list; each item normalized."""
    pred_text = _answer_or_last_line(completion)
    if pred_text is None:
        return Verdict(0.0, None, "no list found")
    gold, pred = _items(problem.answer), _items(pred_text)
    if not gold or not pred:
        return Verdict(0.0, _short(pred_text), "empty list")
    hits = sum(a == b for a, b in zip(pred, gold)) if ordered else sum((Counter(pred) & Counter(gold)).values())
    score = hits / max(len(gold), len(pred))
    return Verdict(score, _short(pred_text), f"{hits}/{max(len(gold), len(pred))} items right")


@VERIFIERS.register("similarity")
def verify_similarity(problem: Problem, completion: str, *, max_chars: int = 20_000, on_answer: bool = True) -> Verdict:
    """difflib.SequenceMatcher(None, pred, gold).ratio() in [0, 1] (SWE-RL's reward for patches,
    whose -1 for a malformed output is a format gate with gate_penalty=-1 here). pred is the
    extracted answer (on_answer) else the whole completion; longer than max_chars scores 0."""
    pred = (extract_answer(completion, marker=False)[0] if on_answer else None) or completion.strip()
    gold = problem.answer.strip()
    if not pred:
        return Verdict(0.0, None, "empty prediction")
    if len(pred) > max_chars or len(gold) > max_chars:
        return Verdict(0.0, None, f"longer than max_chars={max_chars}")
    ratio = difflib.SequenceMatcher(None, pred, gold).ratio()
    return Verdict(ratio, _short(pred), f"similarity {ratio:.3f}")


__all__ = ["verify_numeric", "verify_multiple_choice", "verify_normalized_exact", "verify_r1_format",
           "verify_answer_format", "verify_regex", "verify_list_partial", "verify_similarity", "r1_format_ok"]
