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


def test_heading_pairs_remove_the_heading_from_the_passage():
    text = (
        "the Supplier shall deliver on time. 12. Governing Law. This Agreement shall be governed by"
        " the laws of the State of Delaware. 13. Assignment. Neither party may assign this Agreement"
        " without consent. Page 2 Source: ACME CORP, 10-K, 3/1/2010"
    )
    chunk = {"id": "c_1", "title": "SUPPLY AGREEMENT", "text": text}
    gen = OfflineGenerator(strategies=["heading"], seed=0)
    seen = {}
    for seed in range(12):
        gen.seed = seed
        [p] = gen.generate([chunk])
        seen[p["query"]] = p["positive"]
    assert set(seen) == {"Governing Law", "Assignment"}  # not "Source" (no number, colon)
    for h, pos in seen.items():
        assert h not in pos and pos.startswith("SUPPLY AGREEMENT ")
        assert "governed by the laws of the State of Delaware" in pos  # the section body stays
    md = {
        "id": "m_1",
        "title": "",
        "text": "intro text here\n## Returns and refunds\nItems may be returned within 30 days.",
    }
    [p] = OfflineGenerator(strategies=["heading"], seed=0).generate([md])
    assert p["query"] == "Returns and refunds"
    assert p["positive"] == "intro text here Items may be returned within 30 days."
    # no heading -> no pair from this strategy
    assert (
        OfflineGenerator(strategies=["heading"]).generate(
            [{"id": "x", "text": "plain words only here"}]
        )
        == []
    )


def test_title_heading_scopes_the_heading_to_its_document():
    chunk = {
        "id": "c_1",
        "title": "SUPPLY AGREEMENT",
        "text": "intro. 7. Term. Two years from signing.",
    }
    [p] = OfflineGenerator(strategies=["title_heading"], seed=0).generate([chunk])
    assert p["query"] == "SUPPLY AGREEMENT; Term"
    assert p["positive"] == "SUPPLY AGREEMENT intro. 7. Two years from signing."
    untitled = {"id": "c_2", "title": "", "text": chunk["text"]}
    assert OfflineGenerator(strategies=["title_heading"]).generate([untitled]) == []
