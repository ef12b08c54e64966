"""The records every stage passes on: chunks (documents to generate from) and training pairs.

A chunk is ``{"id": str, "text": str, "title": str (may be ""), ...provenance}``.
A pair is ``{"query": str, "positive": str, "negatives": [str] (optional), "source": str,
"doc_id": str (optional), "query_id": str (optional)}`` where ``source`` is ``real``,
``synthetic`` (LLM) or ``offline``.
"""

from __future__ import annotations

from typing import Any

Chunk = dict[str, Any]
Pair = dict[str, Any]


def doc_text(row: dict) -> str:
    """Title and text joined the way BEIR evaluates dense models (``title + " " + text``)."""
    title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text
