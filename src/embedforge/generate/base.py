"""The generator protocol: ``generate(chunks) -> pairs``.

A chunk is ``{"id": str, "text": str, "title": str (may be ""), ...provenance}``.
A pair is ``{"query": str, "positive": str, "negatives": [str] (optional), "source": str,
"doc_id": str (optional)}`` where ``source`` is ``real``, ``synthetic`` (LLM) or ``offline``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

Chunk = dict[str, Any]
Pair = dict[str, Any]


@runtime_checkable
class Generator(Protocol):
    def generate(self, chunks: list[Chunk]) -> list[Pair]: ...
