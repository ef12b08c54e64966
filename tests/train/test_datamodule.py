"""Batches: no duplicate positives or queries; deterministic in (seed, epoch); nothing dropped."""

from __future__ import annotations

from embedforge.train.datamodule import UniqueBatchSampler, collate_pairs


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
            {"query": "c", "positive": "d", "negatives": ["n3", "n4", "n5"]},
        ]
    )
    assert batch["negatives"] == [["n1", "n2"], ["n3", "n4"]]
