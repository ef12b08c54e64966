"""Exact dense retrieval + metrics: one function for in-training validation and the final report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedforge.eval.metrics import DEFAULT_METRICS, compute_metrics, parse_metric

#: what ``eval.backend`` may name: the torch encoder, or its fp32 ONNX export after a parity check
#: on the eval set's own texts (:func:`embedforge.export.eval_backend.eval_encoder`)
EVAL_BACKENDS = ("torch", "onnx")


@dataclass
class RetrievalSet:
    """An evaluation set: ``corpus`` id -> text, ``queries`` id -> text, ``qrels`` qid -> {did: rel}."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = "eval"
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_queries": len(self.qrels),
            "n_docs": len(self.corpus),
            **self.info,
        }


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    n_skipped: int
    n_docs: int
    seconds: dict[str, float]
    backend: dict[str, Any] = field(default_factory=dict)


def search(
    q_emb: np.ndarray, d_emb: np.ndarray, top_k: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product (embeddings are normalized): (indices, scores), each (Q, k)."""
    import torch  # here, not at the top: commands that only validate or print help stay torch-free

    d = torch.from_numpy(d_emb)
    k = min(top_k, d.shape[0])
    idx, val = [], []
    for s in range(0, q_emb.shape[0], chunk):
        scores = torch.from_numpy(q_emb[s : s + chunk]) @ d.T  # (chunk, N)
        v, i = torch.topk(scores, k, dim=1)
        idx.append(i.numpy())
        val.append(v.numpy())
    if not idx:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(idx), np.concatenate(val)


def evaluate(
    encoder,
    rset: RetrievalSet,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    batch_size: int = 64,
    top_k: int | None = None,
    ignore_identical_ids: bool = True,
    show_progress: bool = True,
    empty_queries: str = "zero",
) -> EvalResult:
    """Encode the corpus once and the judged queries, search exactly, score with trec_eval semantics.

    ``top_k`` defaults to the largest k among the metrics. With ``ignore_identical_ids`` a document
    whose id equals the query id is never retrieved (BEIR's convention for self-matches).
    ``empty_queries``: ``zero`` (a judged query without relevant documents scores 0, as BEIR) or
    ``skip`` (left out of the mean); see :func:`compute_metrics`.
    """
    metrics = list(metrics)
    top_k = top_k or max(parse_metric(m)[1] for m in metrics)
    doc_ids = list(rset.corpus)
    qids = [q for q in rset.qrels if q in rset.queries]
    t0 = time.perf_counter()
    d_emb = encoder.encode([rset.corpus[d] for d in doc_ids], "doc", batch_size, show_progress)
    t1 = time.perf_counter()
    q_emb = encoder.encode([rset.queries[q] for q in qids], "query", batch_size, show_progress)
    t2 = time.perf_counter()
    extra = 1 if ignore_identical_ids else 0
    idx, val = search(q_emb, d_emb, top_k + extra)
    run: dict[str, dict[str, float]] = {}
    for qi, qid in enumerate(qids):
        hits = {
            doc_ids[j]: float(s)
            for j, s in zip(idx[qi], val[qi])
            if not (extra and doc_ids[j] == qid)
        }
        run[qid] = dict(list(hits.items())[:top_k])
    qrels = {q: rset.qrels[q] for q in qids}
    means, per_query, skipped = compute_metrics(run, qrels, metrics, empty_queries)
    t3 = time.perf_counter()
    return EvalResult(
        metrics=means,
        per_query=per_query,
        n_queries=len(per_query),
        n_skipped=skipped,
        n_docs=len(doc_ids),
        seconds={"encode_corpus": t1 - t0, "encode_queries": t2 - t1, "search_and_score": t3 - t2},
    )
