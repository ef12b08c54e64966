"""Parse LLM responses into queries, and drop the ones that would teach the model nothing.

Models answer in many shapes: a JSON array, ``{"queries": [...]}``, a fenced code block, a
numbered or bulleted list, JSON surrounded by prose. :func:`parse_queries` accepts all of them and
returns ``None`` for junk; :func:`validate_queries` drops empty, over-long, duplicate and near-copy
queries and counts why.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)
_LIST_ITEM = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s+(.+?)\s*$")
_TOKEN = re.compile(r"\w+")
_KEYS = ("queries", "questions", "query", "question", "text")


def _from_json(obj: Any) -> list[str] | None:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        out: list[str] = []
        for item in obj:
            got = _from_json(item) if isinstance(item, dict | str) else None
            if got:
                out.extend(got)
        return out if out or not obj else None
    if isinstance(obj, dict):
        for key in _KEYS:
            if key in obj:
                return _from_json(obj[key])
    return None


def _json_candidates(text: str) -> list[Any]:
    """Every JSON array/object that decodes starting at some ``[`` or ``{`` (prose around is fine)."""
    dec = json.JSONDecoder()
    found = []
    i = 0
    while i < len(text):
        if text[i] in "[{":
            try:
                obj, end = dec.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            found.append(obj)
            i = end
        else:
            i += 1
    return found


def _clean(q: str) -> str:
    q = " ".join(q.split())
    if len(q) >= 2 and q[0] == q[-1] and q[0] in "\"'`":
        q = q[1:-1].strip()
    return q.rstrip(",").strip()


def parse_queries(text: str | None) -> list[str] | None:
    """Queries in an LLM response, or ``None`` when nothing parseable is there."""
    if not text or not text.strip():
        return None
    blocks = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for block in blocks:
        try:
            got = _from_json(json.loads(block))
        except json.JSONDecodeError:
            got = None
        if got is None:
            for obj in _json_candidates(block):
                got = _from_json(obj)
                if got:
                    break
        if got:
            return [_clean(q) for q in got]
    items = [m.group(1) for line in text.splitlines() if (m := _LIST_ITEM.match(line))]
    if items:
        return [_clean(q) for q in items]
    return None


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def longest_shared_span(query_tokens: list[str], chunk_tokens: list[str]) -> int:
    """Length of the longest run of query tokens that occurs contiguously in the chunk."""
    if not query_tokens or not chunk_tokens:
        return 0
    positions: dict[str, list[int]] = {}
    for j, t in enumerate(chunk_tokens):
        positions.setdefault(t, []).append(j)
    best = 0
    prev: dict[int, int] = {}  # chunk position -> run length ending at the previous query token
    for t in query_tokens:
        cur = {j: prev.get(j - 1, 0) + 1 for j in positions.get(t, ())}
        if cur:
            best = max(best, max(cur.values()))
        prev = cur
    return best


def validate_queries(
    queries: list[str],
    chunk_text: str,
    max_words: int = 24,
    near_copy_ratio: float = 0.9,
    near_copy_min_words: int = 5,
    max_copied_words: int = 12,
    seen: set[str] | None = None,
) -> tuple[list[str], Counter]:
    """Keep the useful queries; count the dropped ones by reason.

    Reasons: ``empty``; ``too_long`` (more than ``max_words`` words); ``duplicate`` (same text up to
    case and spacing, within the list or in ``seen``); ``near_copy`` (a query of at least
    ``near_copy_min_words`` tokens whose ``near_copy_ratio`` share is one contiguous span of the
    chunk, or any copied span of ``max_copied_words`` tokens). Short keyword queries may legitimately
    reuse the passage's words, hence the minimum length for the ratio rule.
    """
    seen = set() if seen is None else seen
    dropped: Counter = Counter()
    kept: list[str] = []
    chunk_tokens = _tokens(chunk_text)
    for q in queries:
        q = " ".join(str(q).split())
        key = q.lower()
        toks = _tokens(q)
        if not toks:
            dropped["empty"] += 1
        elif len(q.split()) > max_words:
            dropped["too_long"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            span = longest_shared_span(toks, chunk_tokens)
            if span >= max_copied_words or (
                len(toks) >= near_copy_min_words and span >= near_copy_ratio * len(toks)
            ):
                dropped["near_copy"] += 1
            else:
                seen.add(key)
                kept.append(q)
    return kept, dropped
