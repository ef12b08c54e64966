"""From cached LLM answers to training pairs: validation, chunk order, the round-trip filter."""

from __future__ import annotations

from collections import Counter
from typing import Any

from embedforge.generate.cache import GenerationCache
from embedforge.generate.parsing import validate_queries
from embedforge.types import Chunk, Pair, doc_text


def assemble_pairs(
    keyed: list[tuple[Chunk, str]],
    cache: GenerationCache,
    validation: dict[str, Any],
    generator: str,
    style: str,
) -> tuple[list[Pair], dict[str, int]]:
    """Pairs in chunk order from the cache, whatever order answers arrived in.

    Args:
        keyed: ``(chunk, cache key)`` in corpus order.
        cache: the answers by key.
        validation: keyword arguments of :func:`~embedforge.generate.parsing.validate_queries`.
        generator: ``backend:model`` label written into every pair.
        style: the prompt style, written into every pair.

    Returns:
        (pairs, queries dropped by reason).
    """
    seen: set[str] = set()
    dropped: Counter = Counter()
    pairs: list[Pair] = []
    for chunk, key in keyed:
        rec = cache.get(key)
        if rec is None or not rec.get("queries"):
            continue
        context = doc_text(chunk)
        kept, why = validate_queries(rec["queries"], context, seen=seen, **validation)
        dropped.update(why)
        positive = doc_text(chunk)
        for q in kept:
            pairs.append(
                {
                    "query": q,
                    "positive": positive,
                    "source": "synthetic",
                    "doc_id": chunk.get("id"),
                    "generator": generator,
                    "style": style,
                }
            )
    return pairs, dict(dropped)


def round_trip(
    pairs: list[Pair], chunks: list[Chunk], settings: dict[str, Any], encoder: Any = None
) -> tuple[list[Pair], dict[str, Any] | None, Any]:
    """Keep pairs whose chunk the base model ranks in the top ``round_trip_k`` for their query.

    Args:
        pairs / chunks: the generated pairs and every chunk.
        settings: ``{round_trip_k, model, batch_size}`` (``round_trip_k`` null: keep all).
        encoder: the base model if already loaded (else ``settings["model"]`` is loaded).

    Returns:
        (kept pairs, the filter's report or None when off, the encoder used).
    """
    k = settings.get("round_trip_k")
    if not k or not pairs:
        return pairs, None, encoder
    from embedforge.generate.filters import round_trip_filter

    if encoder is None:
        from embedforge.models.encoder import Encoder

        encoder = Encoder.from_pretrained(settings.get("model") or "packaged:all-MiniLM-L6-v2")
    texts = [doc_text(c) for c in chunks]
    batch_size = int(settings.get("batch_size", 64))
    kept, report = round_trip_filter(pairs, texts, encoder, int(k), batch_size)
    return kept, report, encoder
