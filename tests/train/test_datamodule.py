"""Batches: no duplicate positives or queries; deterministic in (seed, epoch); nothing dropped."""

from __future__ import annotations

import pytest

from embedforge.train.datamodule import (
    PairDataModule,
    UniqueBatchSampler,
    batch_keys,
    collate_pairs,
    equal_negatives,
    pair_length,
    token_lengths,
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


# ---------------------------------------------------------------------------- length grouping
def varied_pairs(n: int = 300, seed: int = 0, dup_every: int = 0) -> list[dict]:
    """Synthetic pairs with lengths spread over two orders of magnitude; with ``dup_every`` > 0
    every ``dup_every``-th pair reuses an earlier positive (collisions the sampler must defer)."""
    import random

    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        pos = f"p{i} " + "x" * rng.randint(5, 800)
        if dup_every and i % dup_every == 0 and i:
            pos = pairs[rng.randrange(i)]["positive"]
        pairs.append({"query": f"q{i} " + "y" * rng.randint(1, 60), "positive": pos})
    return pairs


def grouped_sampler(pairs, batch_size=8, seed=0, mega_batch=8, **kw) -> UniqueBatchSampler:
    return UniqueBatchSampler(
        [batch_keys(p) for p in pairs],
        batch_size,
        seed,
        lengths=[pair_length(p) for p in pairs],
        mega_batch=mega_batch,
        **kw,
    )


def padded_waste(pairs, batches) -> float:
    """Fraction of padding when each batch pads its positives to the longest one."""
    real = sum(len(pairs[i]["positive"]) for b in batches for i in b)
    padded = sum(len(b) * max(len(pairs[i]["positive"]) for i in b) for b in batches)
    return 1 - real / padded


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dup_every", [0, 5])
def test_length_grouped_epoch_is_a_permutation_without_duplicate_texts(seed, dup_every):
    """Every pair once per epoch; with shared positives, at most the pair left alone at the very
    end is dropped (a single pair has no in-batch negative), as without grouping."""
    pairs = varied_pairs(300, seed, dup_every=dup_every)
    for epoch in (0, 1):
        s = grouped_sampler(pairs, seed=seed)
        s.set_epoch(epoch)
        batches = list(s)
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen))
        assert len(pairs) - len(seen) <= (1 if dup_every else 0)
        for b in batches:
            texts = [k for i in b for k in batch_keys(pairs[i])]
            assert len(texts) == len(set(texts))
        assert len(s) == len(batches)


@pytest.mark.parametrize("seed", range(4))
def test_length_grouped_batches_pad_less_than_random_ones(seed):
    """Property: on pairs of random lengths, length-grouped batches waste a fraction of the
    padding random batches do, and the epoch still visits lengths in random order."""
    pairs = varied_pairs(400, seed, dup_every=7)
    keys = [batch_keys(p) for p in pairs]
    grouped = list(grouped_sampler(pairs, seed=seed))
    random_ = list(UniqueBatchSampler(keys, 8, seed))
    assert padded_waste(pairs, grouped) < 0.35 * padded_waste(pairs, random_)
    longest = [max(len(pairs[i]["positive"]) for i in b) for b in grouped]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_length_grouped_batches_draw_from_the_whole_mega_batch():
    """A mega-batch of one batch only sorts inside each batch: the same pairs as no grouping."""
    pairs = varied_pairs(96, 1)
    keys = [batch_keys(p) for p in pairs]
    one = [sorted(b) for b in grouped_sampler(pairs, mega_batch=1)]
    assert sorted(one) == sorted(sorted(b) for b in UniqueBatchSampler(keys, 8, 0))


def test_length_grouped_deterministic_in_seed_and_epoch():
    pairs = varied_pairs(200, 2)
    a, b, other = grouped_sampler(pairs), grouped_sampler(pairs), grouped_sampler(pairs, seed=1)
    assert list(a) == list(b) and list(a) != list(other)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


@pytest.mark.parametrize("world", [2, 4])
def test_length_grouped_ranks_split_the_same_global_batches(world):
    pairs = varied_pairs(203, 3, dup_every=6)
    full = list(grouped_sampler(pairs, drop_last=True))
    shares = [list(grouped_sampler(pairs, num_replicas=world, rank=r)) for r in range(world)]
    assert all(len(s) == len(full) for s in shares)
    assert [sum(parts, []) for parts in zip(*shares)] == full
    assert all(len(b) == 8 for b in full)


def test_length_grouping_needs_lengths():
    with pytest.raises(ValueError, match="one length per item"):
        UniqueBatchSampler([("a",), ("b",)], 2, mega_batch=4)


def test_datamodule_length_grouping_reaches_the_sampler():
    pairs = varied_pairs(64, 4)
    on = PairDataModule(pairs, batch_size=8, seed=0, length_grouping=4).train_dataloader()
    off = PairDataModule(pairs, batch_size=8, seed=0).train_dataloader()
    assert on.batch_sampler.mega_batch == 4 and off.batch_sampler.mega_batch is None
    waste_on = padded_waste(pairs, list(on.batch_sampler))
    assert waste_on < padded_waste(pairs, list(off.batch_sampler))
    batch = next(iter(on))
    assert len(batch["query"]) == 8


def test_grouping_by_tokens_groups_queries_when_passages_pass_the_max_length():
    """Passages past the max length all cost the max, whatever their characters: grouped by
    (capped) tokens, the batches sort the queries; grouped by characters they sort the passages."""
    import random

    rng = random.Random(0)
    pairs = [
        {
            "query": f"q{i} " + "word " * rng.randint(1, 40),
            "positive": f"p{i} " + "x " * rng.randint(80, 400),
        }
        for i in range(256)
    ]

    def count(texts, kind):  # a tokenizer with max length 64: a word is a token, plus 2 specials
        return [min(len(t.split()) + 2, 64) for t in texts]

    def query_waste(batches):
        n = [len(pairs[i]["query"].split()) for b in batches for i in b]
        padded = sum(len(b) * max(len(pairs[i]["query"].split()) for i in b) for b in batches)
        return 1 - sum(n) / padded

    lengths = token_lengths(pairs, count)
    assert lengths[0] == 64 + min(len(pairs[0]["query"].split()) + 2, 64)
    by_tokens = PairDataModule(pairs, 8, 0, length_grouping=8, lengths=lengths).train_dataloader()
    by_chars = PairDataModule(pairs, 8, 0, length_grouping=8).train_dataloader()
    assert query_waste(list(by_tokens.batch_sampler)) < 0.5 * query_waste(
        list(by_chars.batch_sampler)
    )


def test_encoder_token_counts_are_cut_at_the_max_length(tiny_encoder):
    short, long = "a short text", "word " * 500
    counts = tiny_encoder.token_counts([short, long], "doc")
    assert counts[1] == tiny_encoder.max_seq_length
    assert counts[0] == len(tiny_encoder.model.tokenizer(short)["input_ids"])


def grouped_pairs(n_groups: int = 12, per_group: int = 7, seed: int = 0):
    """Pairs in groups of uneven size, some groups sharing a positive between two queries."""
    import random

    rng = random.Random(seed)
    pairs, groups = [], []
    for g in range(n_groups):
        for i in range(rng.randint(1, per_group)):
            pairs.append({"query": f"q{g}.{i}", "positive": f"p{g}.{i // 2}"})
            groups.append(f"g{g}")
    return pairs, groups


def group_sampler(pairs, groups, exclude=None, **kw):
    from embedforge.types import BatchGroups

    exclude = exclude or [()] * len(pairs)
    keys = [batch_keys(p) for p in pairs]
    return UniqueBatchSampler(
        keys, kw.pop("batch_size", 8), groups=BatchGroups(groups, exclude), **kw
    )


@pytest.mark.parametrize("seed", range(4))
def test_group_dense_batches_hold_few_groups_and_every_pair(seed):
    """Property: each batch is cut from consecutive groups of a shuffled order, so it holds far
    fewer groups than a random batch; no text twice; only a pair left alone at the end is lost."""
    pairs, groups = grouped_pairs(40, 9, seed)
    s = group_sampler(pairs, groups, seed=seed)
    batches = list(s)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) and len(pairs) - len(seen) <= 1
    for b in batches:
        texts = [k for i in b for k in batch_keys(pairs[i])]
        assert len(texts) == len(set(texts))
    dense = sum(len({groups[i] for i in b}) for b in batches) / len(batches)
    keys = [batch_keys(p) for p in pairs]
    loose = [len({groups[i] for i in b}) for b in UniqueBatchSampler(keys, 8, seed)]
    assert dense < 0.6 * sum(loose) / len(loose)
    # the group order is shuffled too: the first batch's groups change with the epoch
    s.set_epoch(1)
    assert [groups[i] for i in list(s)[0]] != [groups[i] for i in batches[0]]


def test_group_dense_batches_never_show_a_query_a_document_it_must_not_see():
    """A pair whose query must not meet another pair's positive (judged relevant to it, a related
    code) never shares its batch, in either order of arrival."""
    pairs = [{"query": f"q{i}", "positive": f"p{i}"} for i in range(16)]
    groups = ["a"] * 16  # one group: without the exclusion they would share batches
    exclude = [("p1",) if i == 0 else ("p3",) if i == 2 else () for i in range(16)]
    for seed in range(10):
        for b in group_sampler(pairs, groups, exclude, batch_size=4, seed=seed):
            assert not {0, 1} <= set(b) and not {2, 3} <= set(b)


def test_group_dense_batches_are_deterministic_and_split_across_ranks():
    pairs, groups = grouped_pairs(30, 8, 5)
    a, b = group_sampler(pairs, groups, seed=2), group_sampler(pairs, groups, seed=2)
    assert list(a) == list(b) != list(group_sampler(pairs, groups, seed=3))
    full = list(group_sampler(pairs, groups, seed=2, drop_last=True))
    shares = [list(group_sampler(pairs, groups, seed=2, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [x + y for x, y in zip(*shares)] == full


def test_group_dense_batches_need_one_group_per_pair_and_no_length_sorting():
    from embedforge.types import BatchGroups

    with pytest.raises(ValueError, match="one group and one exclusion list per item"):
        UniqueBatchSampler([("a",), ("b",)], 2, groups=BatchGroups(["g"], [()]))
    with pytest.raises(ValueError, match="do not combine"):
        UniqueBatchSampler(
            [("a",), ("b",)],
            2,
            lengths=[1, 2],
            mega_batch=2,
            groups=BatchGroups(["g"] * 2, [()] * 2),
        )


def test_datamodule_group_batches_reach_the_sampler():
    from embedforge.types import BatchGroups

    pairs, groups = grouped_pairs(20, 8, 1)
    bg = BatchGroups(groups, [()] * len(pairs))
    dm = PairDataModule(pairs, batch_size=8, seed=0, groups=bg)
    dl = dm.train_dataloader()
    assert dl.batch_sampler.groups is bg
    # the layout it records: groups per batch of the first epoch, beside shuffled batches
    batches = dl.batch_sampler.global_batches()
    mean = sum(len({groups[i] for i in b}) for b in batches) / len(batches)
    assert dm.layout["groups"] == len(set(groups))
    assert dm.layout["groups_per_batch"] == round(mean, 1)
    assert dm.layout["groups_per_batch"] < dm.layout["shuffled_groups_per_batch"]
    assert PairDataModule(pairs, batch_size=8).layout is None


def test_group_batches_on_ids_that_name_no_groups_give_the_plain_batches(tmp_path):
    """A corpus whose ids the group pattern does not match (``doc0000``: legal-summarization)
    batches exactly as with ``group_batches=false``, even with several queries per document."""
    import json

    from embedforge.data.sources import BeirSource

    (tmp_path / "qrels").mkdir()
    docs = [{"_id": f"doc{i:04d}", "title": "", "text": f"text {i}"} for i in range(30)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "queries.jsonl").write_text("")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    src = BeirSource(str(tmp_path), val_split=None, group_batches=True)
    pairs = [
        {"query": f"q{i}", "positive": f"text {i % 30}", "doc_id": f"doc{i % 30:04d}"}
        for i in range(75)
    ]
    keys = [batch_keys(p) for p in pairs]
    grouped = UniqueBatchSampler(keys, 8, seed=4, groups=src.batch_groups(pairs))
    assert list(grouped) == list(UniqueBatchSampler(keys, 8, seed=4))
