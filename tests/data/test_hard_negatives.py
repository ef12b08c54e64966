from pathlib import Path

import numpy as np
import pytest

from embedforge.data.beir import doc_text, load_beir
from embedforge.data.hard_negatives import mine_hard_negatives
from embedforge.errors import EmbedforgeError
from embedforge.io import read_jsonl

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def legal():
    ds = load_beir(DATA / "legal-summarization")
    corpus = {d: doc_text(row) for d, row in ds.corpus.items()}
    qrels = ds.qrels["test"]
    pairs = [
        {"query": ds.queries[q], "positive": corpus[d], "doc_id": d, "query_id": q}
        for q, rels in sorted(qrels.items())[:60]
        for d, rel in sorted(rels.items())
        if rel > 0
    ]
    from embedforge.models.encoder import Encoder

    return corpus, qrels, pairs, MemoEncoder(Encoder.tiny(max_seq_length=32))


class MemoEncoder:
    """Encodes each text once across the tests (the mining itself is what is under test)."""

    def __init__(self, encoder):
        self.encoder, self.memo = encoder, {}

    def encode(self, texts, kind, batch_size=64, show_progress=False):
        new = [t for t in dict.fromkeys(texts) if (kind, t) not in self.memo]
        if new:
            for t, v in zip(new, self.encoder.encode(new, kind, batch_size)):
                self.memo[(kind, t)] = v
        return np.stack([self.memo[(kind, t)] for t in texts])


def test_no_positive_or_judged_doc_is_a_negative(legal, tmp_path):
    corpus, qrels, pairs, enc = legal
    stats = {}
    out = mine_hard_negatives(
        pairs,
        corpus,
        enc,
        num_negatives=4,
        rank_window=(2, 50),
        margin=None,
        seed=3,
        qrels=qrels,
        out_path=tmp_path / "mined.jsonl",
        stats=stats,
    )
    assert len(out) == len(pairs) and read_jsonl(tmp_path / "mined.jsonl") == out
    assert sum(len(p["negatives"]) for p in out) > 0.9 * 4 * len(out)
    for p in out:
        relevant = {corpus[d] for d, r in qrels[p["query_id"]].items() if r > 0}
        assert p["positive"] in relevant
        assert not set(p["negatives"]) & relevant  # no positive of the query, even the other pair's
        assert len(set(p["negatives"])) == len(p["negatives"]) <= 4
    assert stats["pairs"] == len(pairs)
    # deterministic in the seed (margin off: a random tiny model scores every passage ~equally)
    again = mine_hard_negatives(
        pairs, corpus, enc, rank_window=(2, 50), margin=None, seed=3, qrels=qrels
    )
    other = mine_hard_negatives(
        pairs, corpus, enc, rank_window=(2, 50), margin=None, seed=4, qrels=qrels
    )
    assert again == out and other != out


def test_positive_excluded_by_text_without_ids(legal):
    corpus, _, pairs, enc = legal
    texts = list(corpus.values())
    out = mine_hard_negatives(pairs[:20], texts, enc, rank_window=(0, 30), margin=None, seed=0)
    by_query = {}
    for p in pairs[:20]:
        by_query.setdefault(p["query"], set()).add(p["positive"])
    assert all(not set(p["negatives"]) & by_query[p["query"]] for p in out)


class TableEncoder:
    def __init__(self, table):
        self.table = {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in table.items()}

    def encode(self, texts, kind, batch_size=64, show_progress=False):
        return np.stack([self.table[t] for t in texts])


def test_margin_drops_likely_false_negative():
    # query q: positive P scores 0.80; "near" scores 0.79 > 0.95 * 0.80 -> dropped; "far" 0.50 kept
    q = np.array([1.0, 0.0, 0.0])

    def at(cos):
        return [cos, float(np.sqrt(1 - cos**2)), 0.0]

    enc = TableEncoder(
        {"q": q, "P": at(0.80), "near": at(0.79), "far": at(0.50), "farther": at(0.2)}
    )
    pairs = [{"query": "q", "positive": "P"}]
    stats = {}
    out = mine_hard_negatives(
        pairs,
        ["P", "near", "far", "farther"],
        enc,
        num_negatives=4,
        rank_window=(0, 4),
        margin=0.05,
        stats=stats,
    )
    assert sorted(out[0]["negatives"]) == ["far", "farther"]
    assert stats["false_negative"] == 1 and stats["positive"] == 1
    loose = mine_hard_negatives(
        pairs, ["P", "near", "far", "farther"], enc, rank_window=(0, 4), margin=None
    )
    assert "near" in loose[0]["negatives"]


def test_pipeline_mines_the_whole_corpus_not_the_generator_sample(tmp_path):
    """Defect: mining searched ``data.chunks()``, capped by ``gen_max_docs`` (2,000 of CUAD's
    20,301 passages), so the "hard" negatives came from a small random sample."""
    from embedforge.data.hard_negatives import mine_for_pipeline
    from embedforge.data.sources import BeirSource
    from embedforge.models.encoder import Encoder
    from tests.conftest import make_beir

    corpus = [
        {"_id": f"d{i}", "title": "", "text": f"clause {i} about fee {i % 7}"} for i in range(40)
    ]
    queries = [{"_id": f"q{i}", "text": f"fee {i}"} for i in range(6)]
    qrels = {"train": [(f"q{i}", f"d{i}", 1) for i in range(6)], "test": [("q0", "d1", 1)]}
    src = BeirSource(
        str(make_beir(tmp_path / "b", corpus, queries, qrels)),
        val_split=None,
        gen_max_docs=4,
        hard_negatives={"num": 3, "rank_window": [0, 40], "margin": None},
    )
    pairs = [{"query": f"fee {i}", "positive": f"clause {i} about fee {i % 7}"} for i in range(6)]
    stats = {}
    out = mine_for_pipeline(pairs, src, Encoder.tiny(max_seq_length=16), seed=0, stats=stats)
    sample = {c["text"] for c in src.chunks()}
    negatives = {n for p in out for n in p["negatives"]}
    assert negatives - sample  # negatives from outside the generator's sample
    assert stats["searched_docs"] == 40
    # a query sharing no term with the corpus keeps its pair: the pipeline fills the window
    src.hard_negatives = {"num": 2, "rank_window": [0, 40], "method": "bm25"}
    lonely = [{"query": "zebra crossing", "positive": "clause 3 about fee 3", "doc_id": "d3"}]
    stats = {}
    (out,) = mine_for_pipeline(lonely, src, None, seed=0, stats=stats)
    assert len(out["negatives"]) == 2 and out["positive"] not in out["negatives"]
    assert stats["filled_random"] == 2


def test_mining_script_excludes_train_judgements_only(tmp_path):
    """Defect: scripts/mine_negatives.py merged the qrels of every split, test included, so the
    reported split's labels shaped the training negatives."""
    from embedforge.cli import mine
    from tests.conftest import make_beir

    corpus = [{"_id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(3)]
    qrels = {"train": [("q0", "d0", 1)], "test": [("q0", "d1", 1), ("q1", "d2", 1)]}
    root = make_beir(
        tmp_path / "b", corpus, [{"_id": "q0", "text": "x"}, {"_id": "q1", "text": "y"}], qrels
    )
    _, judged = mine.load_corpus(root)
    assert judged == {"q0": {"d0": 1}}


# ---------------------------------------------------------------------------------------- BM25
def test_bm25_on_real_data_excludes_positives_and_judged_docs(legal):
    corpus, qrels, pairs, _ = legal
    stats = {}
    out = mine_hard_negatives(
        pairs, corpus, None, 4, (0, 50), seed=3, qrels=qrels, stats=stats, method="bm25"
    )
    assert stats["method"] == "bm25" and stats["positive"] > 0  # the positives rank high lexically
    assert sum(len(p["negatives"]) for p in out) > 0.9 * 4 * len(out)
    for p in out:
        relevant = {corpus[d] for d, r in qrels[p["query_id"]].items() if r > 0}
        assert not set(p["negatives"]) & relevant


LEXICAL = {
    "P": "termination of the supply agreement upon written notice",  # the positive
    "R": "the supply agreement terminates upon written notice",  # judged relevant, not the pair's
    "H1": "termination of the supply agreement",
    "H2": "written notice",
    "Z1": "weather is sunny today",
    "Z2": "recipes for bread",
}


def _lexical(rank_window, num=4):
    pairs = [{"query": "termination supply agreement notice", "positive": LEXICAL["P"],
              "doc_id": "P", "query_id": "q"}]  # fmt: skip
    stats = {}
    out = mine_hard_negatives(
        pairs, LEXICAL, None, num, rank_window, margin=0.05, qrels={"q": {"R": 1}},
        stats=stats, method="bm25",
    )  # fmt: skip
    return out[0]["negatives"], stats


def test_bm25_ranks_lexical_matches_first_and_never_a_doc_without_a_shared_term():
    negatives, stats = _lexical((0, 10))
    assert sorted(negatives) == [LEXICAL["H1"], LEXICAL["H2"]]  # Z1, Z2 share no term
    assert stats["positive"] == 2 and stats["false_negative"] == 0  # P and R; no margin on BM25
    # the window's first three ranks: P, R (excluded), then the better lexical match H1
    assert _lexical((0, 3))[0] == [LEXICAL["H1"]]


def test_fill_tops_a_short_window_up_with_random_non_positive_documents():
    """Defect: with BM25 on ICD-10's short terms 438 of 1,666 real pairs had no candidate in the
    window and the pipeline dropped them (every pair must carry the same number of negatives)."""
    pairs = [{"query": "termination supply agreement notice", "positive": LEXICAL["P"],
              "doc_id": "P", "query_id": "q"}]  # fmt: skip
    stats = {}
    out = mine_hard_negatives(
        pairs, LEXICAL, None, 4, (0, 10), qrels={"q": {"R": 1}}, stats=stats, method="bm25",
        fill=True,
    )  # fmt: skip
    negatives = out[0]["negatives"]
    assert len(negatives) == len(set(negatives)) == 4  # H1, H2 from the window; Z1, Z2 drawn
    assert set(negatives) == {LEXICAL[k] for k in ("H1", "H2", "Z1", "Z2")}
    assert stats["pairs_short"] == 1 and stats["filled_random"] == 2
    # a corpus with nothing left to draw gives what there is, never a positive
    few = mine_hard_negatives(pairs, {k: LEXICAL[k] for k in "PR"} | {"H2": LEXICAL["H2"]},
                              None, 3, (0, 10), qrels={"q": {"R": 1}}, method="bm25", fill=True)  # fmt: skip
    assert few[0]["negatives"] == [LEXICAL["H2"]]


def test_unknown_mining_method_is_an_error():
    with pytest.raises(EmbedforgeError, match="data.hard_negatives.method"):
        mine_hard_negatives([{"query": "q", "positive": "p"}], ["p"], None, method="sparse")


def test_mining_command_mines_bm25_without_a_model(tmp_path):
    from embedforge.cli import mine
    from tests.conftest import make_beir

    corpus = [{"_id": k, "title": "", "text": v} for k, v in LEXICAL.items()]
    root = make_beir(
        tmp_path / "b", corpus, [{"_id": "q", "text": "x"}], {"train": [("q", "R", 1)]}
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "termination supply agreement notice", "positive": "'
                     + LEXICAL["P"] + '", "doc_id": "P", "query_id": "q"}\n')  # fmt: skip
    args = ["--pairs", str(pairs), "--corpus", str(root), "--out", str(tmp_path / "out.jsonl")]
    args += ["--method", "bm25", "--model", "/nonexistent", "--rank-window", "0", "10"]
    assert mine.main(args) == 0
    negatives = read_jsonl(tmp_path / "out.jsonl")[0]["negatives"]
    assert sorted(negatives) == [LEXICAL["H1"], LEXICAL["H2"]]
