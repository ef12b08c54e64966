"""Metrics: hand-computed toy cases, and equality with pytrec_eval on real data with a real ranking."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from embedforge.eval.metrics import compute_metrics, rank
from tests.conftest import LEGAL


def test_ndcg_graded_counts_unretrieved_relevant_in_ideal():
    # d1 (rel 2) at rank 1, d3 (rel 1) never retrieved: IDCG includes it
    run = {"q": {"d1": 3.0, "d2": 2.0, "d4": 1.0}}
    qrels = {"q": {"d1": 2, "d3": 1}}
    means, _, skipped = compute_metrics(run, qrels, ["ndcg@10", "recall@5", "mrr@10"])
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert means["ndcg@10"] == pytest.approx(2 / idcg)
    assert means["recall@5"] == pytest.approx(0.5)
    assert means["mrr@10"] == 1.0
    assert skipped == 0


def test_ties_broken_by_doc_id_descending_like_trec_eval():
    assert rank({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]
    run = {"q": {"a": 1.0, "b": 1.0}}
    means, _, _ = compute_metrics(run, {"q": {"a": 1}}, ["mrr@10", "recall@1"])
    assert means["mrr@10"] == 0.5 and means["recall@1"] == 0.0


def test_queries_without_relevant_docs_are_skipped_and_counted():
    run = {"q1": {"d1": 1.0}, "q2": {"d1": 1.0}}
    means, per_query, skipped = compute_metrics(
        run, {"q1": {"d1": 1}, "q2": {"d2": 0}}, ["ndcg@10"], empty_queries="skip"
    )
    assert skipped == 1 and set(per_query) == {"q1"} and means["ndcg@10"] == 1.0


def test_judged_query_missing_from_run_scores_zero():
    means, _, _ = compute_metrics({}, {"q": {"d": 1}}, ["ndcg@10", "recall@100"])
    assert means == {"ndcg@10": 0.0, "recall@100": 0.0}


def test_cutoff_and_mrr_beyond_k():
    run = {"q": {f"d{i}": 100.0 - i for i in range(20)}}
    means, _, _ = compute_metrics(run, {"q": {"d12": 1}}, ["mrr@10", "recall@5", "ndcg@10"])
    assert means == {"mrr@10": 0.0, "recall@5": 0.0, "ndcg@10": 0.0}


def _tfidf_run(
    corpus: dict[str, str], queries: dict[str, str], k: int = 100
) -> dict[str, dict[str, float]]:
    """A real lexical ranking (tf-idf cosine) over a real corpus, independent of the dense code."""
    tok = {d: Counter(t.lower().split()) for d, t in corpus.items()}
    df = Counter(w for c in tok.values() for w in c)
    n = len(corpus)
    idf = {w: math.log(n / c) for w, c in df.items()}

    def vec(c):
        v = {w: f * idf.get(w, 0.0) for w, f in c.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {w: x / norm for w, x in v.items()}

    dv = {d: vec(c) for d, c in tok.items()}
    run = {}
    for qid, q in queries.items():
        qv = vec(Counter(q.lower().split()))
        scores = {d: round(sum(x * v.get(w, 0.0) for w, x in qv.items()), 6) for d, v in dv.items()}
        top = sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)[:k]
        run[qid] = dict(top)
    return run


def test_equals_pytrec_eval_on_real_data():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from embedforge.data.beir import load_beir

    ds = load_beir(LEGAL)
    corpus = ds.texts()
    qrels = ds.qrels["test"]
    queries = {q: ds.queries[q] for q in qrels}
    run = _tfidf_run(corpus, queries)
    # add exact ties to exercise tie-breaking
    rng = random.Random(0)
    for q in rng.sample(sorted(run), 20):
        docs = list(run[q])
        run[q][docs[1]] = run[q][docs[0]]
    means, per_query, skipped = compute_metrics(run, qrels, ["ndcg@10", "recall@5", "recall@100"])
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.5", "recall.100"})
    ref = ev.evaluate(run)
    assert skipped == 0 and len(per_query) == len(ref) == 290
    for q, m in per_query.items():
        assert m["ndcg@10"] == pytest.approx(ref[q]["ndcg_cut_10"], abs=1e-6)
        assert m["recall@5"] == pytest.approx(ref[q]["recall_5"], abs=1e-6)
        assert m["recall@100"] == pytest.approx(ref[q]["recall_100"], abs=1e-6)
    assert means["ndcg@10"] == pytest.approx(
        sum(r["ndcg_cut_10"] for r in ref.values()) / len(ref), abs=1e-6
    )
    # MRR@10 against pytrec_eval's recip_rank on the run cut to the top 10
    cut = {
        q: dict(sorted(d.items(), key=lambda x: (x[1], x[0]), reverse=True)[:10])
        for q, d in run.items()
    }
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    mrr, _, _ = compute_metrics(run, qrels, ["mrr@10"])
    assert mrr["mrr@10"] == pytest.approx(
        sum(r["recip_rank"] for r in rr.values()) / len(rr), abs=1e-6
    )


def test_queries_without_relevant_documents_score_zero_like_pytrec_eval():
    """Defect: a judged query without any relevant document was dropped from the mean, while
    pytrec_eval / BEIR score it 0, so our numbers were higher than BEIR's on such sets."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {"a": {"d1": 1}, "b": {"d2": 0}, "c": {"d3": 1, "d1": 0}}
    run = {q: {"d1": 3.0, "d2": 2.0, "d3": 1.0} for q in qrels}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.5"}).evaluate(run)
    means, per_query, n_empty = compute_metrics(run, qrels, ["ndcg@10", "recall@5"])
    assert n_empty == 1 and set(per_query) == set(ref) == {"a", "b", "c"}
    assert means["ndcg@10"] == pytest.approx(
        sum(r["ndcg_cut_10"] for r in ref.values()) / 3, abs=1e-9
    )
    assert means["recall@5"] == pytest.approx(sum(r["recall_5"] for r in ref.values()) / 3)
    skipped, per_query, _ = compute_metrics(run, qrels, ["recall@5"], empty_queries="skip")
    assert set(per_query) == {"a", "c"} and skipped["recall@5"] == 1.0
