"""Answer extraction and normalization shared by the verifiers: pure string functions, linear time.

    extract_answer(text)  -> (answer, where): the last <answer>...</answer>, else the last
                             \\boxed{...}, else the text after the last '####' (GSM8K), else
                             (optionally) after the last ANSWER_MARKER; where = "tag" | "boxed" |
                             "####" | "marker" | None. A boxed answer inside the tag is unboxed.
    boxed(text)           -> contents of the last \\boxed{...} / \\fbox{...} (balanced braces)
    normalize_text(s)     -> SQuAD normalization: lowercase, no punctuation / articles, one space
    parse_number(s)       -> Decimal or None: '1,234', '$5', '50%', '3/4', '\\frac{3}{4}', '1e5'
    last_number(text)     -> the last number-looking span in text, or None

Every function is linear in its input (no backtracking regex over model output), so a 1 MB
completion costs milliseconds; numbers longer than MAX_NUMBER_CHARS are refused.
"""

from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation

from rftkit.types import ANSWER_MARKER

MAX_NUMBER_CHARS = 1000
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?:/\d+(?![\d/]))?|-?\.\d+")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}$")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_TEXT = re.compile(r"\\(?:text|mathrm|mbox)\{[^{}]*\}")


def boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (or \\fbox{...}) with balanced braces; None if absent/unclosed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0 or text[start:i].strip() not in ("\\boxed", "\\fbox"):
        rest = text[start:].split(None, 1)  # "\boxed 5" (no braces)
        return rest[1].split()[0].rstrip("$.") if len(rest) > 1 and rest[0] == "\\boxed" else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _tag(text: str, name: str = "answer") -> str | None:
    """Contents of the last <name>...</name>; an unclosed last tag runs to the end of the text."""
    start = text.rfind(f"<{name}>")
    if start < 0:
        return None
    body = text[start + len(name) + 2 :]
    end = body.find(f"</{name}>")
    return (body if end < 0 else body[:end]).strip()


def extract_answer(text: str, marker: bool = False) -> tuple[str | None, str | None]:
    """(answer, where) by priority: <answer> tag, \\boxed{}, '####', then ANSWER_MARKER if asked."""
    inner = _tag(text)
    if inner is not None:
        b = boxed(inner)
        return (b if b is not None else inner), "tag"
    b = boxed(text)
    if b is not None:
        return b, "boxed"
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        return (tail.splitlines()[0].strip() if tail else ""), "####"
    if marker and ANSWER_MARKER in text:
        return text.rsplit(ANSWER_MARKER, 1)[1].strip(), "marker"
    return None, None


def normalize_text(s: str) -> str:
    """Lowercase, punctuation -> space, drop articles (a, an, the), collapse whitespace."""
    s = s.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _strip_number(s: str) -> str:
    s = _TEXT.sub("", s).strip().strip("$").strip()
    for junk in ("\\$", "\\%", "\\!", "\\,", "{,}", "\\left", "\\right"):
        s = s.replace(junk, "")
    s = s.rstrip(".").strip()
    if s.startswith("="):
        s = s[1:].strip()
    if s.endswith("%"):
        s = s[:-1].strip()
    return s.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) else s


def parse_number(s: str) -> Decimal | None:
    """A finite number from a short answer string, or None (fractions a/b and \\frac{a}{b} too)."""
    if s is None or len(s) > MAX_NUMBER_CHARS:
        return None
    s = _strip_number(s)
    m = _FRAC.match(s)
    if m:
        num, den = parse_number(m.group(2)), parse_number(m.group(3))
        return None if num is None or den in (None, 0) else (-num if m.group(1) else num) / den
    if s.count("/") == 1:
        a, b = (parse_number(x) for x in s.split("/"))
        return None if a is None or b in (None, 0) else a / b
    try:
        d = Decimal(s)
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def last_number(text: str) -> str | None:
    """The last number-looking span of text (searching the last 10k characters only)."""
    last = None
    for m in _NUMBER.finditer(text[-10_000:]):
        last = m.group(0)
    return last.rstrip(",") if last is not None else None


__all__ = ["boxed", "extract_answer", "normalize_text", "parse_number", "last_number", "MAX_NUMBER_CHARS"]
