"""Batches: no duplicate positives or queries; deterministic in (seed, epoch); nothing dropped."""

from __future__ import annotations

import pytest

from embedforge.train.datamodule import (
    PairDataModule,
    UniqueBatchSampler,
    batch_keys,
    collate_pairs,
    equal_negatives,
)
from embedforge.types import DEFAULT_SCORE


def keys_of(pairs):
    return [(("p", p["positive"]), ("q", p["query"])) for p in pairs]


def make_pairs():
    # 40 pairs over 8 positives: many would collide in a naive shuffle
    return [{"query": f"q{i}", "positive": f"p{i % 8}"} for i in range(40)]


def test_no_duplicate_positive_in_a_batch_and_nothing_lost():
    pairs = make_pairs()
    s = UniqueBatchSampler(keys_of(pairs), batch_size=6, seed=3)
    batches = list(s)
    for b in batches:
        assert len({pairs[i]["positive"] for i in b}) == len(b)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(40))


def test_deterministic_in_seed_and_epoch():
    keys = keys_of(make_pairs())
    a, b = UniqueBatchSampler(keys, 6, seed=3), UniqueBatchSampler(keys, 6, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


def test_ranks_split_global_batches():
    keys = keys_of([{"query": f"q{i}", "positive": f"p{i}"} for i in range(20)])
    r0 = list(UniqueBatchSampler(keys, 4, seed=0, num_replicas=2, rank=0))
    r1 = list(UniqueBatchSampler(keys, 4, seed=0, num_replicas=2, rank=1))
    full = list(UniqueBatchSampler(keys, 4, seed=0, drop_last=True))
    assert [a + b for a, b in zip(r0, r1)] == full


def test_collate_negatives_dense():
    batch = collate_pairs(
        [
            {"query": "a", "positive": "b", "negatives": ["n1", "n2"]},
            {"query": "c", "positive": "d", "negatives": ["n3", "n4"]},
        ]
    )
    assert batch["negatives"] == [["n1", "n2"], ["n3", "n4"]]


def test_uneven_negatives_give_every_rank_one_shape():
    """Defect: collate cut negatives to each rank's own minimum, so ranks gathered (B, N) blocks of
    different N (or a rank with N=0 skipped the collective): a hang or garbage under DDP."""
    pairs = [
        {"query": f"q{i}", "positive": f"p{i}", "negatives": [f"n{i}.{j}" for j in range(i % 4)]}
        for i in range(24)
    ]
    stats = {}
    pairs = equal_negatives(pairs, seed=0, stats=stats)
    assert stats["equalized"]["per_pair"] in (1, 2, 3) and stats["equalized"]["dropped"] == 6
    shapes = set()
    for rank in (0, 1):
        sampler = UniqueBatchSampler(
            [batch_keys(p) for p in pairs], 6, seed=0, num_replicas=2, rank=rank
        )
        for idx in sampler:
            negs = collate_pairs([pairs[i] for i in idx]).get("negatives") or [[]]
            shapes.add((len(negs), len(negs[0])))
    assert len(shapes) == 1
    with pytest.raises(ValueError, match="different negative counts"):
        collate_pairs(
            [{"query": "a", "positive": "b", "negatives": ["n"]}, {"query": "c", "positive": "d"}]
        )


def test_no_text_of_any_column_twice_in_a_batch():
    """Defect: only queries and positives were kept unique; another pair's hard negative could be
    my positive in the same batch (a false negative the loss pushes away)."""
    pairs = [
        {"query": f"q{i}", "positive": f"p{i}", "negatives": [f"p{(i + 1) % 12}"]}
        for i in range(12)
    ]
    dm = PairDataModule(pairs, batch_size=4, seed=1)
    for batch in dm.train_dataloader():
        docs = batch["positive"] + [t for row in batch["negatives"] for t in row]
        assert len(docs) == len(set(docs))


def test_scores_travel_to_every_batch_once_any_pair_has_one():
    """A graded loss needs a score in every batch: pairs without one count as DEFAULT_SCORE."""
    pairs = [{"query": f"q{i}", "positive": f"p{i}"} for i in range(6)]
    plain = PairDataModule(pairs, batch_size=2)
    assert all("score" not in b for b in plain.train_dataloader())
    scored = [{**p, "score": 0.5} if i == 0 else p for i, p in enumerate(pairs)]
    batches = list(PairDataModule(scored, batch_size=2).train_dataloader())
    got = {q: s for b in batches for q, s in zip(b["query"], b["score"])}
    assert got == {"q0": 0.5, **{f"q{i}": DEFAULT_SCORE for i in range(1, 6)}}
