"""IR metrics with trec_eval semantics (what BEIR reports through pytrec_eval).

- Ranking: by score descending; ties broken by document id descending, as trec_eval does.
- Gains are the graded relevance values (``ndcg_cut``: gain = rel, discount = log2(rank + 1)).
- The ideal DCG uses *every* judged relevant document of the query, retrieved or not.
- Relevant means ``rel >= 1``. A judged query with no relevant document scores 0 on every metric
  and counts in the mean, as in pytrec_eval / BEIR (``empty_queries="zero"``); ``"skip"`` leaves
  it out of the mean. Either way such queries are counted.
- ``mrr@k``: reciprocal rank of the first relevant document within the top k, else 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

DEFAULT_METRICS = ("ndcg@10", "recall@5", "mrr@10", "recall@100")
#: the two metrics every report, export bound and model card leads with
HEADLINE_METRICS = ("ndcg@10", "recall@5")
#: what a judged query without any relevant document contributes (``eval.empty_queries``)
EMPTY_QUERIES = ("zero", "skip")
_KINDS = {"ndcg", "recall", "mrr", "precision", "map"}


def parse_metric(name: str) -> tuple[str, int]:
    kind, _, k = name.partition("@")
    if kind not in _KINDS or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"unknown metric {name!r}; use one of {sorted(_KINDS)} as name@k, e.g. ndcg@10"
        )
    return kind, int(k)


def rank(scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval order: score descending, then id descending."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def query_metrics(
    ranking: list[str], rels: Mapping[str, int], metrics: Iterable[str]
) -> dict[str, float]:
    """Metrics of one ranked list against one query's judgements (which hold a relevant doc)."""
    relevant = {d: r for d, r in rels.items() if r >= 1}
    out: dict[str, float] = {}
    for name in metrics:
        kind, k = parse_metric(name)
        top = ranking[:k]
        if kind == "ndcg":
            dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(top))
            ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
            idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
            out[name] = dcg / idcg if idcg > 0 else 0.0
        elif kind == "recall":
            out[name] = sum(d in relevant for d in top) / len(relevant)
        elif kind == "precision":
            out[name] = sum(d in relevant for d in top) / k
        elif kind == "mrr":
            out[name] = next((1.0 / (i + 1) for i, d in enumerate(top) if d in relevant), 0.0)
        elif kind == "map":
            hits, total = 0, 0.0
            for i, d in enumerate(top):
                if d in relevant:
                    hits += 1
                    total += hits / (i + 1)
            out[name] = total / len(relevant)
    return out


def compute_metrics(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Iterable[str] = DEFAULT_METRICS,
    empty_queries: str = "zero",
) -> tuple[dict[str, float], dict[str, dict[str, float]], int]:
    """Mean metrics over the queries of ``qrels``.

    A judged query missing from ``run`` scores 0 (it retrieved nothing). A query without any
    relevant document scores 0 (``empty_queries="zero"``, pytrec_eval / BEIR) or is left out of the
    mean (``"skip"``).

    Returns:
        (means, per_query, n_empty): ``n_empty`` counts queries without any relevant document.
    """
    if empty_queries not in EMPTY_QUERIES:
        raise ValueError(f"empty_queries must be one of {EMPTY_QUERIES}, got {empty_queries!r}")
    metrics = list(metrics)
    per_query: dict[str, dict[str, float]] = {}
    skipped = 0
    for qid, rels in qrels.items():
        if not any(r >= 1 for r in rels.values()):
            skipped += 1
            if empty_queries == "zero":
                per_query[qid] = dict.fromkeys(metrics, 0.0)
            continue
        per_query[qid] = query_metrics(rank(run.get(qid, {})), rels, metrics)
    n = len(per_query)
    means = {m: (sum(v[m] for v in per_query.values()) / n if n else 0.0) for m in metrics}
    return means, per_query, skipped
