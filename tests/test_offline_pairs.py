"""Offline pairs: reproducible, from the corpus alone, strategies as configured."""

from __future__ import annotations

from collections import Counter

from embedforge.data.sources import BeirSource
from embedforge.generate.offline import STRATEGIES, OfflineGenerator, copyable, normalized
from tests.conftest import CUAD, LEGAL


def test_offline_pairs_are_seeded_and_reproducible():
    chunks = BeirSource(str(LEGAL), val_split=None).chunks()
    a = OfflineGenerator(seed=1).generate(chunks)
    b = OfflineGenerator(seed=1).generate(chunks)
    c = OfflineGenerator(seed=2).generate(chunks)
    assert a == b and a != c
    # one pair per document, except passages too short for any strategy (< min_passage_words)
    short = sum(len(c["text"].split()) < 20 for c in chunks)
    assert len(chunks) - short <= len(a) <= len(chunks)
    assert all(p["source"] == "offline" and p["query"] and p["positive"] for p in a)


def test_strategies_and_query_lengths_on_real_corpus():
    chunks = BeirSource(str(CUAD), gen_max_docs=300).chunks()
    gen = OfflineGenerator(
        strategies=["keyphrase", "title_keyphrase", "span"], max_query_words=12, seed=0
    )
    pairs = gen.generate(chunks)
    counts = Counter(p["strategy"] for p in pairs)
    assert set(counts) == {"keyphrase", "title_keyphrase", "span"}
    text = {c["id"]: " ".join(c["text"].split()) for c in chunks}
    for p in pairs:
        assert not copyable(p["query"], p["positive"])
        if p["strategy"] == "keyphrase":
            assert 1 <= len(p["query"].split()) <= 6
            assert all(w in text[p["doc_id"]].lower() for w in p["query"].split())
        if p["strategy"] == "span":  # cut out of its passage
            assert p["query"] in text[p["doc_id"]] and p["query"] not in p["positive"]


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


PASSAGE = (
    "7. Term. This Agreement starts on the Effective Date and runs for two years unless ended"
    " earlier. 8. Termination. Either party may terminate this Agreement on ninety days written"
    " notice to the other party, and the Supplier may terminate at once if the Customer fails to pay."
)
HAND = [
    {"id": "h_1", "title": "Supply Agreement Between Acme And Globex", "text": PASSAGE},
    {
        "id": "h_2",
        "title": "Dense Passage Retrieval for Open-Domain Question Answering",
        "text": "Dense Passage Retrieval for Open-Domain Question Answering is studied here. We show"
        " that retrieval can be practically implemented using dense representations alone, where"
        " embeddings are learned from a small number of questions and passages by a simple"
        " dual-encoder framework, outperforming a strong Lucene BM25 system.",
    },
    {
        "id": "h_3",
        "title": "Typhoid meningitis",
        "text": "Typhoid fever; Intestinal infectious diseases",
    },
    {
        "id": "h_4",
        "title": "",
        "text": "## Returns\nItems may be returned within 30 days of delivery.",
    },
]


def test_no_strategy_ever_puts_its_query_verbatim_in_its_positive():
    for strategy in STRATEGIES + ("title", "heading"):
        for seed in range(8):
            gen = OfflineGenerator(strategies=[strategy], max_query_words=40, seed=seed)
            for p in gen.generate(HAND):
                assert not copyable(p["query"], p["positive"]), (strategy, p)
                q = normalized(p["query"])  # on word boundaries: "term" may be in "termination"
                assert f" {q} " not in f" {normalized(p['positive'])} "
            assert {"copyable_repaired", "copyable_dropped", "by_strategy"} <= set(gen.stats)


def test_no_copyable_pair_on_a_real_cuad_sample():
    chunks = BeirSource(str(CUAD), gen_max_docs=300).chunks()
    for strategies in (list(STRATEGIES), ["span"], ["heading"]):
        pairs = OfflineGenerator(strategies=strategies, max_query_words=40, seed=3).generate(chunks)
        assert pairs and not [p for p in pairs if copyable(p["query"], p["positive"])]


def test_title_body_removes_the_title_and_old_name_title_is_the_same_strategy():
    [p] = OfflineGenerator(strategies=["title_body"], seed=0).generate([HAND[2]])
    assert (p["query"], p["positive"]) == ("Typhoid meningitis", HAND[2]["text"])
    # the title repeated inside the body is cut out of it too (copy filter, counted)
    gen = OfflineGenerator(strategies=["title"], seed=0)
    [p] = gen.generate([HAND[1]])
    assert p["strategy"] == "title_body" and p["query"] == HAND[1]["title"]
    assert (
        p["positive"].startswith("is studied here. We show") and gen.stats["copyable_repaired"] == 1
    )


def test_span_is_cut_out_of_its_passage():
    for seed in range(5):
        [p] = OfflineGenerator(strategies=["span"], seed=seed).generate([HAND[0]])
        assert p["query"] in PASSAGE and p["query"] not in p["positive"]
        assert len(p["positive"].split()) < len(f"{HAND[0]['title']} {PASSAGE}".split())


def test_title_terms_are_salient_title_words_not_a_run_of_the_title():
    chunks = [
        {"id": f"c{i}", "title": t, "text": "x"}
        for i, t in enumerate(
            ["Anemia due to disorders of glutathione metabolism", "Typhoid fever", "Cholera"]
        )
    ]
    pairs = OfflineGenerator(strategies=["title_terms"], seed=1).generate(chunks)
    assert [p["doc_id"] for p in pairs] == ["c0"]  # two-word / one-word titles give no bag
    assert not copyable(pairs[0]["query"], chunks[0]["title"])
    assert set(pairs[0]["query"].split()) <= {"anemia", "disorders", "glutathione", "metabolism"}


class BagOfWords:
    """A lexical stand-in for a model: hashed word counts, normalized (deterministic, instant)."""

    def encode(self, texts, kind, batch_size=64, show_progress=False):
        import re
        import zlib

        import numpy as np

        out = np.zeros((len(texts), 512), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i, zlib.crc32(w.encode()) % 512] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_probe_picks_strategies_in_the_band_and_records_its_table(tmp_path):
    from embedforge.report import write_report
    from embedforge.runs import RunMetrics

    chunks = BeirSource(str(LEGAL), val_split=None).chunks()
    gen = OfflineGenerator(
        strategies="auto",
        probe={
            "candidates": ["keyphrase", "span", "title_body", "title_keyphrase"],
            "mrr_band": [0.2, 0.9],
        },
        seed=0,
    )
    gen.encoder = BagOfWords()
    pairs = gen.generate(chunks)
    probe = gen.stats["probe"]
    rows = {r["strategy"]: r for r in probe["table"]}
    assert set(rows) == {"keyphrase", "span", "title_body", "title_keyphrase"}
    # bag of words solves keyphrases (too easy) and fails on title -> body and cut spans (too hard)
    assert probe["chosen"] == ["title_keyphrase"]
    assert probe["chosen"] and all(rows[s]["chosen"] for s in probe["chosen"])
    assert all(0.2 <= rows[s]["mrr@10"] <= 0.9 for s in probe["chosen"])
    in_band = [s for s, r in rows.items() if r["mrr@10"] is not None and 0.2 <= r["mrr@10"] <= 0.9]
    hardest = sorted(in_band, key=lambda s: rows[s]["mrr@10"])[:2]
    assert probe["chosen"] == hardest
    assert {p["strategy"] for p in pairs} <= set(probe["chosen"])
    m = RunMetrics(
        task="t",
        finetuned={"ndcg@10": 0.5},
        val={"base": 0.4, "best": None, "last": 0.4},
        ship={"min_gain": 0.01, "passed": False},
        eval_set={"name": "e"},
        val_set={"name": "v", "n_queries": 3, "n_docs": 9, "kind": "held-out synthetic"},
        generation=gen.stats,
    )
    report = write_report(tmp_path, m).read_text()
    assert "Strategy probe" in report and f"| {hardest[0]} |" in report
    assert "validation: **held-out synthetic**" in report


def test_probe_refuses_a_bad_band():
    import pytest

    from embedforge.errors import EmbedforgeError

    gen = OfflineGenerator(strategies="auto", probe={"mrr_band": [0.9, 0.2]})
    gen.encoder = BagOfWords()
    with pytest.raises(EmbedforgeError, match="generator.probe.mrr_band"):
        gen.generate(HAND)
    with pytest.raises(EmbedforgeError, match="generator.strategies"):
        OfflineGenerator(strategies=["titles"])
