"""BEIR loading and its one-line errors."""

from __future__ import annotations

import pytest

from embedforge.data.beir import load_beir
from embedforge.data.sources import BeirSource, read_pairs
from embedforge.errors import EmbedforgeError
from tests.conftest import CUAD, LEGAL, make_beir

CORPUS = [{"_id": f"doc_{i}", "title": f"T{i}", "text": f"text number {i}"} for i in range(6)]
QUERIES = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(6)]


def test_loads_real_dataset():
    ds = load_beir(LEGAL)
    assert len(ds.corpus) == 445 and len(ds.queries) == 290 and ds.splits == ["test"]
    assert sum(len(r) for r in ds.qrels["test"].values()) == 446


def test_missing_dir(tmp_path):
    with pytest.raises(EmbedforgeError, match="dataset directory not found"):
        load_beir(tmp_path / "nope")


def test_empty_corpus(tmp_path):
    make_beir(tmp_path, [], QUERIES, {"test": []})
    with pytest.raises(EmbedforgeError, match="empty"):
        load_beir(tmp_path)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    make_beir(tmp_path, CORPUS, QUERIES, {"test": [("q0", "doc_0", 1)]})
    with (tmp_path / "corpus.jsonl").open("a") as f:
        f.write('{"_id": "x", "text": \n')
    with pytest.raises(EmbedforgeError, match=r"corpus.jsonl:7: malformed JSON"):
        load_beir(tmp_path)


def test_qrels_unknown_ids(tmp_path):
    make_beir(tmp_path, CORPUS, QUERIES, {"test": [("q0", "doc_99", 1)]})
    with pytest.raises(EmbedforgeError, match=r"test.tsv:2: corpus id 'doc_99'"):
        load_beir(tmp_path)
    make_beir(tmp_path, CORPUS, QUERIES, {"test": [("qX", "doc_1", 1)]})
    with pytest.raises(EmbedforgeError, match=r"query id 'qX'"):
        load_beir(tmp_path)


def test_missing_eval_split_and_val_equal_eval(tmp_path):
    make_beir(tmp_path, CORPUS, QUERIES, {"dev": [("q0", "doc_0", 1)]})
    with pytest.raises(EmbedforgeError, match="test.tsv not found"):
        BeirSource(str(tmp_path)).eval_set()
    with pytest.raises(EmbedforgeError, match="never see the reported split"):
        BeirSource(str(tmp_path), eval_split="dev", val_split="dev")


def test_eval_set_same_group_and_sampling_keep_relevant_docs():
    src = BeirSource(
        str(CUAD), eval_corpus="same_group", val_max_queries=50, val_max_docs=300, seed=1
    )
    ev = src.eval_set()
    assert (
        len(ev.qrels) == 319 and len(ev.corpus) == 1682
    )  # the test contracts' passages (data README)
    val = src.val_set()
    # capped same-group sets keep whole contracts: every passage of a kept contract is searched
    groups = {src._group(d) for d in val.corpus}
    assert len(val.qrels) <= 50 and len(val.corpus) <= 300 and len(groups) >= 2
    assert all(
        sum(src._group(d) == g for d in src.dataset.corpus)
        == sum(src._group(d) == g for d in val.corpus)
        for g in groups
    )
    assert all(d in val.corpus for rels in val.qrels.values() for d in rels)
    assert not set(val.queries) & set(ev.queries)


def test_train_queries_become_real_pairs():
    src = BeirSource(str(CUAD), train_queries=True)
    pairs = src.real_pairs()
    assert len(pairs) == 5105 and all(p["source"] == "real" for p in pairs)
    test_queries = {src.dataset.queries[q] for q in src.dataset.qrels["test"]}
    assert not test_queries & {p["query"] for p in pairs}


def test_read_pairs_errors(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"query": "a", "positive": "b"}\n{"query": "a"}\n')
    with pytest.raises(EmbedforgeError, match="record 2 needs"):
        read_pairs(p)
    p.write_text('{"query": "a", "positive": "b", "negatives": ["c"]}\nnot json\n')
    with pytest.raises(EmbedforgeError, match=r"pairs.jsonl:2: malformed JSON"):
        read_pairs(p)


def test_group_negatives_same_contract_never_relevant():
    src = BeirSource(str(CUAD), train_queries=True, group_negatives=2, seed=3)
    pairs = src.real_pairs()[:300]
    stats: dict = {}
    out = src.with_group_negatives(pairs, stats=stats)
    text_id = {t: d for d, t in src.texts.items()}
    train = src.dataset.qrels["train"]
    assert len(out) == 300 and stats["pairs"] == 300
    assert stats["from_group"] + stats["from_corpus"] == 600 and stats["from_group"] > 550
    for p in out:
        negs = [text_id[t] for t in p["negatives"]]
        assert len(set(negs)) == 2
        relevant = {d for d, r in train[p["query_id"]].items() if r > 0}
        assert not set(negs) & relevant and p["doc_id"] not in negs
        # same contract as the positive (unless the contract ran out of non-relevant passages)
        if stats["from_corpus"] == 0:
            assert {src._group(d) for d in negs} == {src._group(p["doc_id"])}
    # seeded: the same pairs get the same negatives; another seed differs somewhere
    assert src.with_group_negatives(pairs) == out
    other = BeirSource(str(CUAD), train_queries=True, group_negatives=2, seed=4)
    assert other.with_group_negatives(pairs) != out


def test_group_negatives_need_doc_ids():
    src = BeirSource(str(CUAD), group_negatives=1)
    with pytest.raises(EmbedforgeError, match="needs every training pair to name a corpus doc_id"):
        src.with_group_negatives([{"query": "q", "positive": "p"}])
    with pytest.raises(EmbedforgeError, match="group_negatives must be >= 0"):
        BeirSource(str(CUAD), group_negatives=-1)


def test_group_negatives_fall_back_to_the_corpus_and_fail_when_it_is_too_small(tmp_path):
    corpus = [
        {"_id": f"c{g}_{i}", "title": "", "text": f"doc {g} {i}"} for g in "ab" for i in range(2)
    ]
    path = make_beir(
        tmp_path / "ds",
        corpus,
        [{"_id": "q1", "text": "question one"}],
        {"train": [("q1", "ca_0", 1)], "test": [("q1", "ca_1", 1)]},
    )
    src = BeirSource(str(path), train_queries=True, group_negatives=2, val_split=None)
    stats: dict = {}
    [p] = src.with_group_negatives(src.real_pairs(), stats=stats)
    # contract "a" holds one other passage; the second negative comes from contract "b"
    assert stats["from_group"] == 1 and stats["from_corpus"] == 1
    assert p["negatives"][0] == "doc a 1" and p["negatives"][1].startswith("doc b")
    src.group_negatives = 4
    with pytest.raises(EmbedforgeError, match="only 3 documents that are not relevant"):
        src.with_group_negatives(src.real_pairs())


def test_graded_train_qrels_become_scored_pairs(tmp_path):
    """Graded relevance survives as ``score`` = relevance / the split's highest grade."""
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i}"} for i in range(4)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(2)]
    qrels = {
        "train": [("q0", "d0", 3), ("q0", "d1", 1), ("q0", "d2", 0), ("q1", "d3", 2)],
        "test": [("q1", "d0", 1)],
    }
    src = BeirSource(str(make_beir(tmp_path / "g", corpus, queries, qrels)), train_queries=True)
    scores = {p["doc_id"]: p["score"] for p in src.real_pairs()}
    assert scores == pytest.approx({"d0": 1.0, "d1": 1 / 3, "d3": 2 / 3})  # grade 0: no pair


def test_binary_qrels_score_one():
    assert {p["score"] for p in BeirSource(str(CUAD), train_queries=True).real_pairs()} == {1.0}


def test_read_pairs_keeps_and_checks_scores(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text(
        '{"query": "a", "positive": "b", "score": 0.25}\n{"query": "c", "positive": "d"}\n'
    )
    assert [x.get("score") for x in read_pairs(p)] == [0.25, None]
    for bad in ("1.5", '"high"', "true", "-0.1"):
        p.write_text(f'{{"query": "a", "positive": "b", "score": {bad}}}\n')
        with pytest.raises(
            EmbedforgeError, match=r"record 1: 'score' must be a number in \[0, 1\]"
        ):
            read_pairs(p)


def test_group_batches_group_by_contract_and_exclude_judged_passages():
    src = BeirSource(str(CUAD), train_queries=True, group_batches=True)
    pairs = src.real_pairs()[:400] + [{"query": "made up", "positive": "no document"}]
    bg = src.batch_groups(pairs)
    train = src.dataset.qrels["train"]
    for p, g, ex in zip(pairs[:-1], bg.groups, bg.exclude):
        assert g == src._group(p["doc_id"])
        relevant = {src.texts[d] for d, r in train[p["query_id"]].items() if r > 0}
        assert set(ex) == relevant - {p["positive"]}
    assert bg.exclude[-1] == () and bg.groups[-1] not in set(bg.groups[:-1])  # its own group
    assert sum(bool(ex) for ex in bg.exclude) > 0  # CUAD queries with several judged passages
    assert BeirSource(str(CUAD), train_queries=True).batch_groups(pairs) is None
