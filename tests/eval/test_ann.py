"""FAISS approximate search past a corpus size, with its recall against exact search recorded."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.eval.ann import SearchSettings
from embedforge.eval.retrieval import RetrievalSet, evaluate, retrieve

pytest.importorskip("faiss")


def clustered(n: int, dim: int = 16, centers: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centers, as real embeddings cluster by topic."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim))
    x = c[rng.integers(0, centers, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_below_the_threshold_search_stays_exact():
    d = clustered(500)
    idx, _, info = retrieve(d[:10], d, 5, SearchSettings(approx_above=1000))
    assert info == {"method": "exact", "n_docs": 500}
    assert idx[:, 0].tolist() == list(range(10))


def test_past_the_threshold_faiss_searches_and_its_recall_is_measured():
    d = clustered(4000)
    q = d[:300] + 0.01
    settings = SearchSettings(approx_above=1000, nprobe=16, recall_sample=100)
    idx, val, info = retrieve(q, d, 10, settings)
    assert info["method"] == "faiss" and info["index"] == "IVF63,SQ8" and info["nprobe"] == 16
    assert info["recall_sample"] == 100 and info["recall@10"] >= 0.9
    assert idx.shape == val.shape == (300, 10)
    exact, _, _ = retrieve(q, d, 10, None)
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact)])
    assert abs(agree - info["recall@10"]) < 0.05  # the sample's recall stands for all queries
    one_cell = SearchSettings(approx_above=1000, nprobe=1, recall_sample=100)
    assert retrieve(q, d, 10, one_cell)[2]["recall@10"] < info["recall@10"]  # it does measure


def test_evaluate_reports_how_it_searched():
    d = clustered(1500)
    names = [f"t{i}" for i in range(1500)]
    table = dict(zip(names, d))

    class Table:
        def encode(self, texts, kind, batch_size=64, show_progress=False):
            return np.stack([table[t] for t in texts])

    rset = RetrievalSet(
        corpus={f"d{i}": names[i] for i in range(1500)},
        queries={f"q{i}": names[i] for i in range(50)},
        qrels={f"q{i}": {f"d{i}": 1} for i in range(50)},
    )
    exact = evaluate(Table(), rset, ["ndcg@10"], show_progress=False)
    approx = evaluate(
        Table(), rset, ["ndcg@10"], show_progress=False, search_settings=SearchSettings(1000)
    )
    assert exact.search["method"] == "exact" and approx.search["method"] == "faiss"
    assert approx.metrics["ndcg@10"] == pytest.approx(exact.metrics["ndcg@10"], abs=0.02)


def test_mining_past_the_threshold_searches_with_faiss_and_records_it():
    from embedforge.data.hard_negatives import mine_hard_negatives

    d = clustered(1500)
    table = {f"t{i}": v for i, v in enumerate(d)}

    class Table:
        def encode(self, texts, kind, batch_size=64, show_progress=False):
            return np.stack([table[t] for t in texts])

    pairs = [{"query": f"t{i}", "positive": f"t{i + 1}"} for i in range(0, 40, 2)]
    stats: dict = {}
    mined = mine_hard_negatives(
        pairs,
        list(table),
        Table(),
        2,
        (1, 20),
        None,
        stats=stats,
        search=SearchSettings(approx_above=1000, recall_sample=20),
    )
    assert all(len(p["negatives"]) == 2 for p in mined)
    assert stats["search"]["method"] == "faiss" and stats["search"]["recall@20"] >= 0.8
