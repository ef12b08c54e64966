"""Label-free signals (embedforge.generate.label_free): the probe set, cross-strategy validation,
pseudo-qrels and neighbourhood overlap."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.generate.label_free import (
    ProbeSet,
    cross_strategy_set,
    neighbour_overlap,
    probe_set,
    pseudo_qrels_set,
)

WORDS = "contract party notice termination payment liability warranty license term breach".split()


def chunks(n: int = 30) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "id": f"c{i}",
            "title": f"Agreement {i} {WORDS[i % len(WORDS)]} clause",
            "text": " ".join(rng.choice(WORDS, 40)) + f" section {i}.",
        }
        for i in range(n)
    ]


def test_probe_set_pairs_each_positive_with_its_doc_and_is_seeded():
    a, b = probe_set(chunks(), n_docs=20, seed=3), probe_set(chunks(), n_docs=20, seed=3)
    assert a.pairs == b.pairs and a.docs == b.docs
    assert a.pairs and len({p["strategy"] for p in a.pairs}) > 1  # every strategy may serve
    for i, p in enumerate(a.pairs):
        assert a.docs[i] == p["positive"]
    assert len(a.docs) == 20  # documents without a pair stay as distractors
    assert probe_set(chunks(), n_docs=20, seed=4).pairs != a.pairs


def test_cross_strategy_set_holds_out_the_trained_strategies():
    probe = probe_set(chunks(), n_docs=30)
    trained = {probe.pairs[0]["strategy"]}
    xset = cross_strategy_set(probe, trained, max_queries=5)
    assert xset is not None and 0 < len(xset.qrels) <= 5
    assert trained.isdisjoint(xset.info["strategies"])
    for qid, rel in xset.qrels.items():
        (doc,) = rel
        i = int(doc[1:])
        assert probe.pairs[i]["query"] == xset.queries[qid]
        assert xset.corpus[doc] == probe.pairs[i]["positive"]
    assert cross_strategy_set(probe, {p["strategy"] for p in probe.pairs}) is None


class FixedEncoder:
    """Documents embed as the unit vectors e_0, e_1, ...; each query as the vector it is given."""

    def __init__(self, docs: list[str], queries: dict[str, int]):
        self.docs, self.queries = docs, queries

    def encode(self, texts, kind, batch_size=64, show_progress=True):
        n = len(self.docs)
        eye = np.eye(n, dtype=np.float32)
        if kind == "doc":
            return np.stack([eye[self.docs.index(t)] for t in texts])
        return np.stack([eye[self.queries[t]] for t in texts])


def test_pseudo_qrels_are_the_passages_bm25_and_the_base_model_agree_on():
    docs = ["alpha beta gamma", "delta epsilon zeta", "alpha zeta theta", "iota kappa lambda"]
    probe = ProbeSet(
        docs,
        [
            {"query": "alpha beta", "positive": docs[0], "strategy": "s"},
            {"query": "delta epsilon", "positive": docs[1], "strategy": "s"},
        ],
    )
    # the base model's top-1: doc 0 for the first query (BM25 agrees), doc 2 for the second
    # (BM25 says doc 1): only the first keeps a pseudo-relevant passage
    base = FixedEncoder(docs, {"alpha beta": 0, "delta epsilon": 2})
    rset = pseudo_qrels_set(probe, base, k=1)
    assert rset.qrels == {"q0": {"d0": 1}}
    assert rset.queries == {"q0": "alpha beta", "q1": "delta epsilon"}
    assert rset.corpus == {f"d{i}": t for i, t in enumerate(docs)}


def test_neighbour_overlap_is_one_when_nothing_moved_and_falls_as_neighbourhoods_change():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    assert neighbour_overlap(a, a, k=5) == 1.0
    b = rng.normal(size=(50, 8)).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    assert neighbour_overlap(a, b, k=5) < 0.5
    # two groups, each a tight cluster: swapping which group a row belongs to moves exactly it
    g = np.repeat(np.eye(2, dtype=np.float32), 5, axis=0) + rng.normal(0, 0.01, (10, 2))
    moved = g.copy()
    moved[0] = g[9]
    overlap = neighbour_overlap(g, moved, k=4)
    assert 0.5 < overlap < 1.0


@pytest.mark.parametrize("n_docs", [1, 5])
def test_probe_set_of_few_documents(n_docs):
    probe = probe_set(chunks(n_docs), n_docs=400)
    assert len(probe.docs) == n_docs


def test_the_mix_check_measures_the_corpus_margin_of_offline_generated_pairs(tiny_encoder):
    from embedforge.generate.label_free import corpus_margin, mix_check

    real = [{"query": "q", "positive": "p", "source": "real"}]
    offline = [{"query": "k", "positive": "d", "source": "offline", "strategy": "keyphrase"}]
    checked = mix_check(real + offline, chunks, tiny_encoder, seed=1)
    margin = corpus_margin(chunks(), tiny_encoder, seed=1)
    assert checked == {"signal": "lexical_margin", **margin, "bm25_ahead": margin["high"] < 0}


@pytest.mark.parametrize("generated", ["llm", "untagged", "none"])
def test_the_mix_check_does_not_speak_for_pairs_that_are_not_offline_ones(generated):
    from embedforge.generate.label_free import mix_check

    other = {
        "llm": [{"query": "k", "positive": "d", "source": "llm", "strategy": "llm"}],
        "untagged": [{"query": "k", "positive": "d", "source": "offline"}],
        "none": [],
    }[generated]
    never = lambda: pytest.fail("the documents were sampled")  # noqa: E731
    assert (
        mix_check([{"query": "q", "positive": "p", "source": "real"}] + other, never, None) is None
    )
