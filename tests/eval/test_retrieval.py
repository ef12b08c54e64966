"""evaluate(): exact search over an encoded corpus, self-matches ignored, metrics from the ranking."""

from __future__ import annotations

import numpy as np

from embedforge.eval.retrieval import RetrievalSet, evaluate, search


class LookupEncoder:
    """Encodes texts to fixed vectors, so the expected ranking is known."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts, kind, batch_size=64, show_progress=False):
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def test_search_exact_topk():
    d = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.9, 0.0, 0.0]], dtype=np.float32)
    idx, val = search(q, d, 2)
    assert idx.tolist() == [[1, 0]] and np.allclose(val, [[0.9, 0.1]])


def test_search_in_document_blocks_equals_one_full_ranking():
    """Issue 24: documents are scored a block at a time with a running top-k (memory: one block,
    not (queries x corpus)); the ranking is the full one, including a short last block and a
    memory-mapped corpus."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((50, 8)).astype(np.float32)
    d = rng.standard_normal((997, 8)).astype(np.float32)
    full = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :20]
    idx, val = search(q, d, 20, chunk=16, doc_block=100)
    assert idx.tolist() == full.tolist()
    np.testing.assert_allclose(val, np.take_along_axis(q @ d.T, full, 1), rtol=1e-5)
    frozen = d.copy()
    frozen.flags.writeable = False  # as the embedding store's memory maps are
    assert search(q, frozen, 20, doc_block=64)[0].tolist() == full.tolist()
    assert search(q, d[:3], 20, doc_block=2)[0].shape == (50, 3)  # k capped at the corpus size


def test_evaluate_known_ranking_and_identical_ids():
    table = {
        "doc a": [1, 0],
        "doc b": [0, 1],
        "doc qb": [0.2, 0.8],
        "query a": [0.9, 0.1],
        "query b": [0.2, 0.8],
    }
    rset = RetrievalSet(
        corpus={"a": "doc a", "b": "doc b", "qb": "doc qb"},
        queries={"qa": "query a", "qb": "query b"},
        qrels={"qa": {"a": 1}, "qb": {"b": 1}},
    )
    res = evaluate(
        LookupEncoder(
            {k: np.array(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        ),
        rset,
        ["mrr@10", "recall@1"],
    )
    # doc "qb" is query qb's exact match but shares its id: ignored, so qb's top hit is b
    assert res.metrics == {"mrr@10": 1.0, "recall@1": 1.0}
    assert res.n_queries == 2 and res.n_docs == 3
