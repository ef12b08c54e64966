"""Approximate top-k search with FAISS, for corpora past ``search.approx_above`` documents.

Exact search (``embedforge.eval.retrieval.search``) costs ``Q x N`` dot products; past a few
million documents an inverted-file index answers in a fraction of that. The index is a FAISS
``index_factory`` string (default ``IVF{nlist},SQ8``: ``nlist = sqrt(N)`` k-means cells, 8-bit
scalar-quantized vectors, a quarter of the float32 memory), trained on a seeded sample of 40
vectors per cell, filled a block at a time (the embeddings may be memory maps), searched with ``nprobe`` cells per query.
Its recall@k against exact search is measured on a seeded sample of queries every time, so a run
reports how approximate it was (``metrics.json``: ``eval_backend.*.search``,
``hard_negatives.search``). Needs ``pip install 'embedforge[ann]'`` (faiss-cpu).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedforge.errors import EmbedforgeError


@dataclass
class SearchSettings:
    """How evaluation and mining search (``search.*`` in ``conf/train.yaml``).

    Args:
        approx_above: corpora with more documents than this are searched with FAISS (None: always
            exact).
        index: FAISS ``index_factory`` string; ``{nlist}`` is replaced by ``nlist``.
        nlist: inverted-file cells (None: ``sqrt(N)``).
        nprobe: cells searched per query.
        recall_sample: queries whose approximate top-k is compared with the exact one.
        seed: seeds the training sample and the recall sample.
    """

    approx_above: int | None = 1_000_000
    index: str = "IVF{nlist},SQ8"
    nlist: int | None = None
    nprobe: int = 64
    recall_sample: int = 200
    seed: int = 0

    def approximate(self, n_docs: int) -> bool:
        return self.approx_above is not None and n_docs > int(self.approx_above)


def faiss_search(
    q_emb: np.ndarray, d_emb: np.ndarray, top_k: int, settings: SearchSettings, block: int = 65536
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Approximate top-k by inner product: (indices, scores, info). Missing hits are -1."""
    try:
        import faiss
    except ImportError:
        raise EmbedforgeError(
            f"search.approx_above={settings.approx_above}: a corpus this size is searched with"
            " FAISS, which needs: pip install 'embedforge[ann]'"
        ) from None
    n, dim = d_emb.shape
    nlist = int(settings.nlist or max(1, round(math.sqrt(n))))
    t0 = time.perf_counter()
    index = faiss.index_factory(dim, settings.index.format(nlist=nlist), faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(settings.seed)
    train = np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))
    index.train(np.ascontiguousarray(d_emb[train], dtype=np.float32))
    for s in range(0, n, block):
        index.add(np.ascontiguousarray(d_emb[s : s + block], dtype=np.float32))
    t1 = time.perf_counter()
    faiss.extract_index_ivf(index).nprobe = min(int(settings.nprobe), nlist)
    scores, idx = index.search(np.ascontiguousarray(q_emb, dtype=np.float32), min(top_k, n))
    info = {
        "method": "faiss",
        "index": settings.index.format(nlist=nlist),
        "nprobe": min(int(settings.nprobe), nlist),
        "n_docs": int(n),
        "build_s": round(t1 - t0, 2),
        "search_s": round(time.perf_counter() - t1, 2),
    }
    return idx.astype(np.int64), scores.astype(np.float32), info


def recall_sample(n_queries: int, settings: SearchSettings) -> np.ndarray:
    """The seeded, sorted sample of query rows on which the approximate top-k is checked."""
    n = min(n_queries, int(settings.recall_sample))
    return np.sort(np.random.default_rng(settings.seed).choice(n_queries, n, replace=False))


def recall_vs_exact(
    approx_idx: np.ndarray, exact_idx: np.ndarray, sample: np.ndarray
) -> dict[str, Any]:
    """recall@k of the approximate top-k (all queries) against the exact top-k of ``sample``'s
    rows (:func:`recall_sample`; ``exact_idx[i]`` is row ``sample[i]``'s)."""
    k = approx_idx.shape[1]
    if not len(sample) or not k:
        return {"recall_sample": 0}
    hits = [len(set(exact_idx[i]) & set(approx_idx[s])) / k for i, s in enumerate(sample)]
    return {"recall_sample": int(len(sample)), f"recall@{k}": round(float(np.mean(hits)), 4)}
