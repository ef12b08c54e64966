"""The records every stage passes on: chunks (documents to generate from) and training pairs.

A chunk is ``{"id": str, "text": str, "title": str (may be ""), ...provenance}``.
A pair is ``{"query": str, "positive": str, "negatives": [str] (optional), "source": str,
"doc_id": str (optional), "query_id": str (optional), "score": float (optional)}`` where
``source`` is ``real``, ``synthetic`` (LLM) or ``offline``, and ``score`` is a graded label in
[0, 1] (graded losses: ``loss=cosine``, ``loss=cosent``); a pair without one counts as
``DEFAULT_SCORE`` (a positive is fully relevant) once any pair of the training set has a score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Chunk = dict[str, Any]
Pair = dict[str, Any]

#: the graded label of a pair without a ``score`` (a positive is fully relevant)
DEFAULT_SCORE = 1.0


def doc_text(row: dict) -> str:
    """Title and text joined the way BEIR evaluates dense models (``title + " " + text``)."""
    title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


@dataclass(frozen=True)
class BatchGroups:
    """Group-dense training batches (``data.group_batches``, :mod:`embedforge.train.datamodule`):
    for each training pair, its group, and the document texts its query must not meet in its batch
    (another pair's positive or negative there would be a false negative)."""

    groups: list[str]
    exclude: list[tuple[str, ...]]
