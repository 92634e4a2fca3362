"""The `search` tool: BM25 over the documents of a problem's knowledge base.

Search-R1 / ZeroSearch-style retrieval (Jin et al. 2025, arXiv:2503.09516; Sun et al. 2025,
arXiv:2505.04588) at CPU size: the documents are short sentences that the task generates per
problem (rftkit/tasks/agent_tasks.py, agent_search) and the environment passes as context;
ranking is rank_bm25's BM25Okapi (k1 = 1.5, b = 0.75) over lowercase word tokens, ties broken
by document order. Only documents that share a word with the query are returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rftkit.envs.tools import AGENT_EXTRA, register_tool
from rftkit.errors import ConfigError

_WORD = re.compile(r"[a-z0-9]+")
NO_RESULTS = "no results"
SEPARATOR = "; "


def tokenize(text: str) -> list[str]:
    """Lowercase words (letters and digits); punctuation separates."""
    return _WORD.findall(text.lower())


def rank(query: str, docs: Sequence[str], k: int) -> list[int]:
    """Indices of the top-k documents by BM25 score that share a word with the query."""
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        raise ConfigError(f"the search tool ranks documents with the rank_bm25 library: {AGENT_EXTRA}") from None
    words, corpus = tokenize(query), [tokenize(d) for d in docs]
    if not words or not any(corpus):
        return []
    scores = BM25Okapi(corpus).get_scores(words)
    hits = [i for i, toks in enumerate(corpus) if set(words) & set(toks)]
    return sorted(hits, key=lambda i: (-scores[i], i))[: max(0, k)]


@register_tool("search", {"type": "object", "required": ["query"],
                          "properties": {"query": {"type": "string", "description": "words to look for"}}},
               timeout=5.0, context=("docs", "k"))
def search(query: str, docs: Sequence[str] = (), k: int = 1) -> str:
    """Search the knowledge base: the k documents that best match the query (BM25), joined by '; '."""
    hits = rank(query, list(docs), int(k))
    return SEPARATOR.join(docs[i] for i in hits) if hits else NO_RESULTS


__all__ = ["search", "rank", "tokenize", "NO_RESULTS", "SEPARATOR"]
