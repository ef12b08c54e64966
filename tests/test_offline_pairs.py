"""Offline pairs: reproducible, from the corpus alone, strategies as configured."""

from __future__ import annotations

from collections import Counter

from embedforge.data.sources import BeirSource
from embedforge.generate.offline import OfflineGenerator
from tests.conftest import CUAD, LEGAL


def test_offline_pairs_are_seeded_and_reproducible():
    chunks = BeirSource(str(LEGAL), val_split=None).chunks()
    a = OfflineGenerator(seed=1).generate(chunks)
    b = OfflineGenerator(seed=1).generate(chunks)
    c = OfflineGenerator(seed=2).generate(chunks)
    assert a == b and a != c
    assert len(a) == len(chunks)
    assert all(p["source"] == "offline" and p["query"] and p["positive"] for p in a)


def test_strategies_and_query_lengths_on_real_corpus():
    chunks = BeirSource(str(CUAD), gen_max_docs=300).chunks()
    gen = OfflineGenerator(
        strategies=["keyphrase", "title_keyphrase", "span"], max_query_words=12, seed=0
    )
    pairs = gen.generate(chunks)
    counts = Counter(p["strategy"] for p in pairs)
    assert set(counts) == {"keyphrase", "title_keyphrase", "span"}
    for p in pairs:
        if p["strategy"] == "keyphrase":
            assert 1 <= len(p["query"].split()) <= 6
            assert all(w in p["positive"].lower() for w in p["query"].split())
        if p["strategy"] == "span":
            assert p["query"] in " ".join(p["positive"].split()) or all(
                w in p["positive"] for w in p["query"].split()
            )


def test_uninformative_titles_are_not_queries():
    chunks = [
        {"id": f"c{i}", "title": "Same Title", "text": f"alpha beta gamma delta {i} epsilon zeta"}
        for i in range(200)
    ]
    pairs = OfflineGenerator(strategies=["title"], seed=0).generate(chunks)
    assert pairs == []


def test_ict_removes_the_query_sentence_from_its_passage():
    chunks = BeirSource(str(LEGAL), val_split=None).chunks()
    pairs = OfflineGenerator(strategies=["ict"], max_query_words=40, seed=0).generate(chunks)
    text = {c["id"]: c["text"] for c in chunks}
    assert pairs and all(
        p["positive"].count(p["query"]) < text[p["doc_id"]].count(p["query"]) for p in pairs
    )
