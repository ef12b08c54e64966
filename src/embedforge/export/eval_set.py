"""An export's eval set from a BEIR dir (a run's own is :func:`embedforge.runs.run_eval_set`); subset for speed."""

from __future__ import annotations

from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.eval.retrieval import RetrievalSet
from embedforge.io import stable_hash


def beir_eval_set(path: str | Path, split: str = "test") -> RetrievalSet:
    """A BEIR dir's ``split`` as a RetrievalSet (documents as :func:`embedforge.types.doc_text`)."""
    from embedforge.data.beir import load_beir

    ds = load_beir(path)
    if split not in ds.qrels:
        raise EmbedforgeError(f"{path}: no qrels split {split!r} (have {ds.splits})")
    return RetrievalSet(
        corpus=ds.texts(),
        queries=ds.queries,
        qrels=ds.qrels[split],
        name=f"{Path(path).name}/{split}",
    )


def subset(rset: RetrievalSet, max_queries: int | None, max_docs: int | None) -> RetrievalSet:
    """A deterministic subset: ``max_queries`` judged queries, all their relevant docs, then other
    docs (in hash order) up to ``max_docs``. Scores on a subset are higher than on the full corpus
    (fewer distractors); compare variants on the same subset only."""
    qids = sorted((q for q in rset.qrels if q in rset.queries), key=lambda q: stable_hash(q))
    if max_queries and len(qids) > max_queries:
        qids = qids[:max_queries]
    keep = dict.fromkeys(d for q in qids for d in rset.qrels[q] if d in rset.corpus)
    for d in sorted(rset.corpus, key=lambda d: stable_hash(d)):
        if max_docs and len(keep) >= max_docs:
            break
        keep.setdefault(d)
    full = len(qids) == len(rset.qrels) and len(keep) == len(rset.corpus)
    info = dict(rset.info)
    if not full:  # the caps that made this set, not those of the set it was cut from
        info.update(max_queries=max_queries, max_docs=max_docs)
        info["subset"] = (
            f"{len(qids)}/{len(rset.qrels)} queries, {len(keep)}/{len(rset.corpus)} docs"
            " (all relevant docs of the kept queries + hash-ordered distractors)"
        )
    return RetrievalSet(
        corpus={d: rset.corpus[d] for d in keep},
        queries={q: rset.queries[q] for q in qids},
        qrels={q: rset.qrels[q] for q in qids},
        name=rset.name,
        info=info,
    )
