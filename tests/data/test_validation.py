"""Validation without a dev split: held-out real queries first; held-out generated pairs hardened."""

from __future__ import annotations

import pytest

from embedforge.data.sources import holdout_sets
from embedforge.data.validation import HELD_OUT_REAL, HELD_OUT_SYNTHETIC, harden
from tests.test_offline_pairs import BagOfWords

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def _doc(i: int) -> str:
    a, b, c = WORDS[i % 13], WORDS[(i * 5 + 1) % 13], WORDS[(i * 7 + 3) % 13]
    return f"record {i} on {a} {b} {c} and item{i} notes"


def _pairs(n_real: int, n_offline: int) -> list[dict]:
    real = [
        {"query": f"who asked about item{i}", "positive": _doc(i), "source": "real"}
        for i in range(n_real)
    ]
    offline = [
        {"query": f"item{i} notes", "positive": _doc(i), "source": "offline"}
        for i in range(n_real, n_real + n_offline)
    ]
    return real + offline


def test_validation_is_held_out_real_queries_when_there_are_any():
    pairs = _pairs(60, 200)
    train, val, held_eval = holdout_sets(pairs, 0.05, 0, None, "t", with_eval=False)
    assert held_eval is None and val.info["kind"] == HELD_OUT_REAL
    real_queries = {p["query"] for p in pairs if p["source"] == "real"}
    assert set(val.queries.values()) <= real_queries and len(val.queries) >= 12  # 60 // 5
    assert len(val.corpus) == 260  # every positive (real and generated) is a distractor
    held = set(val.queries.values())
    assert not held & {p["query"] for p in train}
    assert sum(p["source"] == "offline" for p in train) == 200  # generated pairs only train
    # with too few real positives, validation is held out of all pairs and says so
    _, val, _ = holdout_sets(_pairs(5, 200), 0.05, 0, None, "t", with_eval=False)
    assert val.info["kind"] == HELD_OUT_SYNTHETIC


def test_hardness_guard_lowers_the_base_score_on_an_easy_set():
    # half the held-out queries copy their positive's words (easy), half share one word (hard)
    pairs = [
        {
            "query": _doc(i) if i % 2 else f"notes on {WORDS[i % 13]}",
            "positive": _doc(i),
            "source": "offline",
        }
        for i in range(400)
    ]
    enc = BagOfWords()
    _, plain, _ = holdout_sets(pairs, 0.1, 0, 100, "t", with_eval=False)
    _, val, _ = holdout_sets(pairs, 0.1, 0, 100, "t", with_eval=False, encoder=enc, max_base=0.62)
    g = val.info["guard"]
    assert val.info["kind"] == HELD_OUT_SYNTHETIC and g["lexical_distractors"] > 0
    assert g["base_before"] > 0.62 >= g["base_after"] and g["dropped"] > 0
    assert len(val.queries) == len(plain.queries) - g["dropped"] >= 20
    # the dropped ones are the lexically trivial ones (copies), not chosen by the model's failures
    assert sum(q == val.corpus[next(iter(val.qrels[k]))] for k, q in val.queries.items()) < sum(
        q == plain.corpus[next(iter(plain.qrels[k]))] for k, q in plain.queries.items()
    )
    # off (max_base null): no model is run, the set is the plain held-out one
    _, off, _ = holdout_sets(pairs, 0.1, 0, 100, "t", with_eval=False, encoder=enc)
    assert "guard" not in off.info and off.queries == plain.queries


def test_harden_keeps_a_floor_of_queries():
    from embedforge.eval.retrieval import RetrievalSet

    corpus = {f"d{i}": _doc(i) for i in range(50)}
    rset = RetrievalSet(
        corpus, {f"q{i}": _doc(i) for i in range(40)}, {f"q{i}": {f"d{i}": 1} for i in range(40)}
    )
    out = harden(rset, BagOfWords(), 0.01, min_keep=0.5, min_queries=5)
    assert len(out.queries) == 20 and out.info["guard"]["base_after"] == pytest.approx(1.0)
