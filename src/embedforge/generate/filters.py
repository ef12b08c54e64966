"""Round-trip consistency: keep a generated query only if the base model can find its source chunk.

A query whose own passage is not in the base model's top ``k`` among all chunks is often vague,
off-topic or about something many passages share; dropping it trades quantity for label quality
(Promptagator, InPars). Off by default: on a strong base model it also removes the hard examples.
"""

from __future__ import annotations

from typing import Any

from embedforge.generate.base import Pair


def round_trip_filter(
    pairs: list[Pair], chunk_texts: list[str], encoder: Any, k: int, batch_size: int = 64
) -> tuple[list[Pair], dict[str, Any]]:
    """Keep pairs whose positive is ranked in the top ``k`` of ``chunk_texts`` for their query.

    Args:
        pairs: ``{"query", "positive", ...}``; a positive missing from ``chunk_texts`` is added.
        chunk_texts: every chunk of the corpus, as the positives spell them.
        encoder: anything with ``encode(texts, kind, batch_size) -> (N, D)`` normalized.
        k: rank cut-off (1 = the source chunk must come first).
        batch_size: encoding batch size.

    Returns:
        (kept pairs, report ``{"k", "checked", "kept", "dropped"}``).
    """
    from embedforge.eval.retrieval import search

    docs = list(dict.fromkeys(list(chunk_texts) + [p["positive"] for p in pairs]))
    index = {t: i for i, t in enumerate(docs)}
    queries = list(dict.fromkeys(p["query"] for p in pairs))
    qindex = {q: i for i, q in enumerate(queries)}
    d_emb = encoder.encode(docs, "doc", batch_size)
    q_emb = encoder.encode(queries, "query", batch_size)
    top, _ = search(q_emb, d_emb, int(k))  # (Q, k)
    kept = [p for p in pairs if index[p["positive"]] in set(top[qindex[p["query"]]].tolist())]
    return kept, {
        "k": int(k),
        "checked": len(pairs),
        "kept": len(kept),
        "dropped": len(pairs) - len(kept),
    }
