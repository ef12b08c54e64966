"""ICD-10 sibling negatives: a code's group is its category; its ancestors/descendants are never
its negatives; a category (no dot: not matched by the pattern) is sane too."""

from __future__ import annotations

import pytest

from embedforge.config import build, validate


@pytest.fixture(scope="module")
def icd(tmp_path_factory):
    from tests.conftest import compose_config

    cache = tmp_path_factory.mktemp("icd")
    cfg = compose_config("data.group_negatives=2", "data.chapters=[1]", f"paths.cache_dir={cache}")
    validate(cfg)  # `python train.py data.group_negatives=1` composes and validates
    return build(cfg.data)


def test_a_codes_group_is_its_category(icd):
    assert icd._group("A01.0") == "A01" and icd._group("A01.04") == "A01"
    assert icd._group("S52.521") == "S52"
    assert icd._group("A01") == "A01"  # a category does not match: it is its own group


def test_related_codes_are_ancestors_and_descendants_only(icd):
    group = ["A01", "A01.0", "A01.01", "A01.02", "A01.1", "A01.2"]
    assert icd.related("A01.0", group) == {"A01", "A01.0", "A01.01", "A01.02"}
    assert icd.related("A01.1", group) == {"A01", "A01.1"}
    assert icd.related("A01", group) == set(group)  # a category: its whole group is its family


def _lineage(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def test_group_negatives_are_siblings_never_family_or_judged(icd):
    pairs = icd.real_pairs()
    stats = {}
    out = icd.with_group_negatives(pairs, stats=stats)
    assert stats["num"] == 2 and stats["from_group"] > 0.8 * 2 * len(pairs)
    by_text = {t: d for d, t in icd.texts.items()}
    judged = icd.train_qrels()
    categories = 0
    for p in out:
        pos, negs = p["doc_id"], [by_text[t] for t in p["negatives"]]
        assert len(negs) == 2 and pos not in negs
        assert not any(_lineage(pos, n) for n in negs)
        assert not set(negs) & set(judged[p["query_id"]])
        if "." in pos:
            siblings = [
                d
                for d in icd.dataset.corpus
                if icd._group(d) == icd._group(pos) and not _lineage(pos, d)
            ]
            if len(siblings) >= 2:
                assert all(icd._group(n) == icd._group(pos) for n in negs)
        else:
            categories += 1  # negatives from the whole corpus, never its own subcategories
    assert categories > 0


def test_group_batches_group_by_category_and_exclude_family_and_judged(icd):
    """``data.group_batches``: each pair's group is its positive's category, and its query must
    never meet its code's ancestors/descendants or codes judged relevant to it in its batch."""
    pairs = icd.real_pairs()
    assert icd.batch_groups(pairs) is None  # off by default
    icd.group_batches = True
    try:
        bg = icd.batch_groups(pairs)
    finally:
        icd.group_batches = False
    by_text = {t: d for d, t in icd.texts.items()}
    judged = icd.train_qrels()
    assert len(bg.groups) == len(bg.exclude) == len(pairs)
    family = 0
    for p, g, ex in zip(pairs, bg.groups, bg.exclude):
        pos = p["doc_id"]
        # a category (no dot) names no group: its pairs keep their shuffled places
        if "." in pos:
            assert g == icd._group(pos)
        else:
            assert bg.groups.count(g) == 1
        ex_ids = {by_text[t] for t in ex}
        assert pos not in ex_ids  # its own positive is the batch keys' business
        expected = {d for d in icd.dataset.corpus if icd._group(d) == g and _lineage(pos, d)}
        expected |= {d for d, r in judged[p["query_id"]].items() if r > 0}
        assert ex_ids == expected - {pos}
        family += bool(ex_ids)
    assert family > 0.3 * len(pairs)
