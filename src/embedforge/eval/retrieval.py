"""Exact dense retrieval + metrics: one function for in-training validation and the final report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.eval.ann import SearchSettings, faiss_search, recall_sample, recall_vs_exact
from embedforge.eval.metrics import DEFAULT_METRICS, compute_metrics, parse_metric

if TYPE_CHECKING:
    import torch

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
    search: dict[str, Any] = field(default_factory=dict)  # exact or FAISS (+ its recall)


def search(
    q_emb: np.ndarray,
    d_emb: np.ndarray,
    top_k: int,
    chunk: int = 256,
    doc_block: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product (embeddings are normalized): (indices, scores), each (Q, k).

    Documents are scored ``doc_block`` at a time against ``chunk`` queries at a time and a running
    top-k is kept, so beyond the embeddings (which may be memory maps) the peak is one ``chunk x
    doc_block`` score block (64 MB by default) plus the (Q, k) result, whatever the corpus size.
    A corpus of at most ``doc_block`` documents is one block: one top-k over each full row.
    """
    import torch  # here, not at the top: commands that only validate or print help stay torch-free

    n_q, n = q_emb.shape[0], d_emb.shape[0]
    k = min(top_k, n)
    best_i = np.zeros((n_q, k), dtype=np.int64)
    best_v = np.full((n_q, k), -np.inf, dtype=np.float32)
    for b in range(0, n, doc_block):
        d = _tensor(d_emb[b : b + doc_block])  # (block, D)
        kb = min(k, d.shape[0])
        for s in range(0, n_q, chunk):
            scores = _tensor(q_emb[s : s + chunk]) @ d.T  # (chunk, block)
            v, i = torch.topk(scores, kb, dim=1)
            if b == 0:
                best_v[s : s + chunk, :kb], best_i[s : s + chunk, :kb] = v.numpy(), i.numpy()
                continue
            v = torch.cat([torch.from_numpy(best_v[s : s + chunk]), v], dim=1)  # (chunk, k + kb)
            i = torch.cat([torch.from_numpy(best_i[s : s + chunk]), i + b], dim=1)
            v, pos = torch.topk(v, k, dim=1)
            best_v[s : s + chunk], best_i[s : s + chunk] = (
                v.numpy(),
                torch.gather(i, 1, pos).numpy(),
            )
    return best_i, best_v


def retrieve(
    q_emb: np.ndarray, d_emb: np.ndarray, top_k: int, settings: SearchSettings | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Top-k for evaluation and mining: exact (:func:`search`), or FAISS when the corpus is past
    ``settings.approx_above`` (:mod:`embedforge.eval.ann`; its recall against exact search on a
    sample of the queries is measured). Returns (indices, scores, info); a missing hit is -1."""
    if settings is None or not settings.approximate(d_emb.shape[0]):
        idx, val = search(q_emb, d_emb, top_k)
        return idx, val, {"method": "exact", "n_docs": int(d_emb.shape[0])}
    idx, val, info = faiss_search(q_emb, d_emb, top_k, settings)
    sample = recall_sample(q_emb.shape[0], settings)
    exact, _ = search(np.ascontiguousarray(q_emb[sample]), d_emb, idx.shape[1])
    info.update(recall_vs_exact(idx, exact, sample))
    return idx, val, info


def _tensor(a: np.ndarray) -> torch.Tensor:
    """float32 tensor over ``a`` (copied only when ``a`` is read-only, e.g. a memory map)."""
    import torch

    a = np.ascontiguousarray(a, dtype=np.float32)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def evaluate(
    encoder,
    rset: RetrievalSet,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    batch_size: int = 64,
    top_k: int | None = None,
    ignore_identical_ids: bool = True,
    show_progress: bool = True,
    empty_queries: str = "zero",
    search_settings: SearchSettings | None = None,
) -> EvalResult:
    """Encode the corpus once and the judged queries, search exactly, score with trec_eval semantics.

    ``top_k`` defaults to the largest k among the metrics. With ``ignore_identical_ids`` a document
    whose id equals the query id is never retrieved (BEIR's convention for self-matches).
    ``empty_queries``: ``zero`` (a judged query without relevant documents scores 0, as BEIR) or
    ``skip`` (left out of the mean); see :func:`compute_metrics`. ``search_settings``: exact, or
    FAISS past a corpus size (:func:`retrieve`; recorded in ``EvalResult.search``).
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
    idx, val, searched = retrieve(q_emb, d_emb, top_k + extra, search_settings)
    run: dict[str, dict[str, float]] = {}
    for qi, qid in enumerate(qids):
        hits = {
            doc_ids[j]: float(s)
            for j, s in zip(idx[qi], val[qi])
            if j >= 0 and not (extra and doc_ids[j] == qid)
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
        search=searched,
    )
