"""A held-out synthetic validation set the base model does not already solve (the hardness guard).

Held out of generated pairs, validation asks "find this pair's positive", an easier task than the
real one: the base model scored 0.83 on it while fine-tuning lowered the real task (issue 11), so
selection shipped the worse model. The guard, base-model independent where it can be:

1. distractors: the searched corpus keeps every judged document plus each query's nearest
   documents by word overlap (idf-weighted), then random ones up to ``val_max_docs``: documents a
   copy-matcher confuses, not ones drawn against the base model;
2. when the base model still scores NDCG@10 above ``max_base``, queries are dropped in order of
   word overlap with their positive (most lexically trivial first, an order that does not look at
   the base model, so the set does not select the base model's failures) until the base mean is at
   most ``max_base`` or ``min_keep`` of the queries remain.

``RetrievalSet.info["guard"]`` records what it did; ``info["kind"]`` names the validation.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter, defaultdict
from typing import Any

from embedforge.eval.retrieval import RetrievalSet

_TOKEN = re.compile(r"[^\W_]+")

#: what validation was (``RetrievalSet.info["kind"]``, reported in metrics.json and report.md)
DEV_SPLIT, HELD_OUT_REAL, HELD_OUT_SYNTHETIC = "dev split", "held-out real", "held-out synthetic"
#: what a run reports next to numbers measured on a ``HELD_OUT_SYNTHETIC`` eval set
GENERATED_EVAL_NOTE = (
    "measured on queries generated from your documents, not on real queries:"
    " give data.eval_path for a real number"
)


def _tokens(text: str) -> set[str]:
    return {t for t in _TOKEN.findall(text.lower()) if len(t) > 2}


def lexical_distractors(
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    max_docs: int | None,
    seed: int,
) -> tuple[list[str], int]:
    """Doc ids for a validation corpus: judged docs, then the idf-weighted word-overlap neighbours
    of each query (round robin over queries), then seeded random ones, up to ``max_docs``.

    Returns (doc ids, number of lexical neighbours added).
    """
    if not max_docs or len(corpus) <= max_docs:
        return sorted(corpus), 0
    toks = {d: _tokens(t) for d, t in corpus.items()}
    df = Counter(t for ts in toks.values() for t in ts)
    n = len(corpus)
    idf = {t: math.log((n + 1) / (c + 0.5)) for t, c in df.items()}
    index: dict[str, list[str]] = defaultdict(list)
    for d in sorted(toks):
        for t in toks[d]:
            index[t].append(d)
    keep = {d for rels in qrels.values() for d in rels if d in corpus}
    ranked: list[list[str]] = []
    for q in sorted(qrels):
        score: Counter = Counter()
        for t in _tokens(queries.get(q, "")):
            if df.get(t, n) <= n // 2:  # words in half the corpus say nothing
                for d in index.get(t, ()):
                    score[d] += idf[t]
        ranked.append([d for d, _ in sorted(score.items(), key=lambda x: (-x[1], x[0]))[:50]])
    added = 0
    for depth in range(50):
        for r in ranked:
            if len(keep) >= max_docs:
                break
            if depth < len(r) and r[depth] not in keep:
                keep.add(r[depth])
                added += 1
    others = sorted(set(corpus) - keep)
    keep |= set(random.Random(seed).sample(others, max(0, min(len(others), max_docs - len(keep)))))
    return sorted(keep), added


def overlap(query: str, positive: str) -> float:
    """Share of the query's words (3+ letters) that occur in the positive."""
    q = _tokens(query)
    return len(q & _tokens(positive)) / len(q) if q else 1.0


def harden(
    rset: RetrievalSet,
    encoder: Any,
    max_base: float,
    metric: str = "ndcg@10",
    min_keep: float = 0.5,
    min_queries: int = 20,
    batch_size: int = 64,
) -> RetrievalSet:
    """Drop the most lexically trivial queries until the base model's ``metric`` <= ``max_base``.

    One evaluation with the base model (the corpus does not change, so per-query scores stay
    valid as queries are dropped). Keeps at least ``max(min_queries, min_keep * n)`` queries.
    """
    from embedforge.eval.retrieval import evaluate

    logging.getLogger("embedforge").info(
        "validation: scoring %d generated queries with the base model (drops the trivial ones)",
        len(rset.queries),
    )
    r = evaluate(encoder, rset, [metric], batch_size)  # a long encode: it reports progress
    per_q = {q: s[metric] for q, s in r.per_query.items()}
    before = sum(per_q.values()) / max(1, len(per_q))
    guard: dict[str, Any] = {
        "metric": metric,
        "max_base": max_base,
        "base_before": round(before, 4),
        "dropped": 0,
    }
    qids = sorted(per_q)
    floor = min(len(qids), max(min_queries, math.ceil(min_keep * len(qids))))
    positive = {
        q: " ".join(rset.corpus[d] for d in rset.qrels[q] if d in rset.corpus) for q in qids
    }
    order = sorted(qids, key=lambda q: (-overlap(rset.queries[q], positive[q]), q))
    kept, total = set(qids), sum(per_q.values())
    for q in order:
        if total / max(1, len(kept)) <= max_base or len(kept) <= floor:
            break
        kept.discard(q)
        total -= per_q[q]
    guard["dropped"] = len(qids) - len(kept)
    guard["base_after"] = round(total / max(1, len(kept)), 4)
    info = {**rset.info, "guard": {**rset.info.get("guard", {}), **guard}}
    return RetrievalSet(
        corpus=rset.corpus,
        queries={q: t for q, t in rset.queries.items() if q in kept},
        qrels={q: rels for q, rels in rset.qrels.items() if q in kept},
        name=rset.name,
        info=info,
    )
