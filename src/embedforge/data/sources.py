"""Data sources: where training pairs, validation and evaluation sets come from.

A source is built from ``conf/data/<name>.yaml`` (YAML keys = constructor arguments). The pipeline
asks it for ``chunks()`` (documents a generator turns into pairs), ``real_pairs()`` (labelled
pairs), ``val_set()`` (in-training validation) and ``eval_set()`` (the reported split). What a
stage may need beyond that is declared here too, with a neutral default: ``train_qrels()`` (judged
documents that mining must never use as negatives), ``group_negatives`` /
``with_group_negatives()`` (negatives drawn from the positive's group) and ``batch_groups()``
(group-dense batches).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from embedforge.data.beir import BeirDataset, load_beir
from embedforge.errors import EmbedforgeError
from embedforge.eval.retrieval import RetrievalSet
from embedforge.io import iter_jsonl
from embedforge.types import BatchGroups, Chunk, Pair, doc_text


class DataSource:
    """Base class: training-set assembly options shared by every source.

    Args:
        name: label for the run directory and reports.
        batch_size: training pairs per optimizer step (global batch under DDP).
        generate: turn ``chunks()`` into pairs with the configured generator.
        mix_real: real pairs in the real:synthetic mix (default 1 : 3).
        mix_synthetic: generated pairs per ``mix_real`` real pairs (caps the generated ones when real pairs exist).
        mix_select_steps: with real and generated pairs and real validation, train the real pairs
            alone and the mix this many steps each and keep the one that validates better
            (:mod:`embedforge.train.mix_choice`); ``auto``: a quarter of the run; 0/null: off.
        mix_select_check: ``lexical_margin``: before those probes, when the generated pairs are
            offline ones, keep the real pairs alone without probing if BM25 is not significantly
            ahead of the base model on the documents' own offline queries
            (:func:`embedforge.generate.label_free.lexical_margin`); null: always probe.
        max_train_pairs: cap on the final training set (seeded sample), null = all.
        holdout: fraction of training pairs held out for validation when the source has no dev split.
        val_max_queries / val_max_docs: size of the in-training validation set (queries sampled; the
            corpus keeps their relevant documents plus seeded distractors).
        val_max_base: validation held out of generated pairs is made harder until the base model's
            NDCG@10 on it is at most this (:mod:`embedforge.data.validation`); null = off.
        hard_negatives: mining options (``num`` = 0 disables).
        num_workers: data loader workers.
        length_grouping: length-grouped batches: sort each shuffled run of this many batches by
            length before cutting it into batches (less padding); None = off.
        seed: sampling seed.
    """

    #: negatives per pair drawn from the positive's group (0 = the source has none to offer)
    group_negatives: int = 0

    def __init__(
        self,
        name: str = "data",
        batch_size: int = 32,
        generate: bool = True,
        mix_real: int = 1,
        mix_synthetic: int = 3,
        mix_select_steps: int | str | None = "auto",
        mix_select_check: str | None = "lexical_margin",
        max_train_pairs: int | None = None,
        holdout: float = 0.05,
        val_max_queries: int | None = 200,
        val_max_docs: int | None = 2000,
        val_max_base: float | None = 0.7,
        hard_negatives: dict | None = None,
        num_workers: int = 0,
        length_grouping: int | None = None,
        seed: int = 0,
    ):
        self.name = name
        self.batch_size = int(batch_size)
        self.generate = bool(generate)
        self.mix_real = int(mix_real)
        self.mix_synthetic = int(mix_synthetic)
        self.mix_select_steps = mix_select_steps
        self.mix_select_check = mix_select_check
        self.max_train_pairs = max_train_pairs
        self.holdout = float(holdout)
        self.val_max_queries = val_max_queries
        self.val_max_docs = val_max_docs
        self.val_max_base = val_max_base
        self.hard_negatives = dict(hard_negatives or {})
        self.num_workers = int(num_workers)
        self.length_grouping = int(length_grouping) if length_grouping else None
        self.seed = int(seed)

    def chunks(self) -> list[Chunk]:
        """The documents handed to the generator (sources may sample them: ``gen_max_docs``)."""
        return []

    def corpus(self) -> list[Chunk]:
        """Every document the source knows, never sampled: hard negatives are mined from these
        (a sample would leave mostly easy negatives)."""
        return self.chunks()

    def real_pairs(self) -> list[Pair]:
        return []

    def val_set(self) -> RetrievalSet | None:
        return None

    def eval_set(self) -> RetrievalSet | None:
        return None

    def train_qrels(self) -> dict[str, dict[str, int]] | None:
        """Judgements of the training split (query id -> {doc id: relevance}), if the source has any."""
        return None

    def with_group_negatives(
        self, pairs: list[Pair], stats: dict[str, Any] | None = None
    ) -> list[Pair]:
        """Copies of ``pairs`` with ``group_negatives`` same-group negatives each."""
        raise EmbedforgeError(
            f"data source {self.name!r} has no document groups to draw negatives from"
        )

    def batch_groups(self, pairs: list[Pair]) -> BatchGroups | None:
        """Each pair's group for group-dense batches, or None when they are off (the default)."""
        return None

    def summary(self) -> dict[str, Any]:
        return {"name": self.name}


def subsample(
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    max_queries: int | None,
    max_docs: int | None,
    seed: int,
    name: str,
    info: dict[str, Any] | None = None,
) -> RetrievalSet:
    """A RetrievalSet with at most ``max_queries`` judged queries and ``max_docs`` documents.

    The sampled corpus always keeps every judged document of the kept queries (so no relevant
    document is missing from the index) and fills up with seeded random distractors.
    """
    rng = random.Random(seed)
    qids = sorted(q for q, rels in qrels.items() if q in queries)
    if max_queries and len(qids) > max_queries:
        qids = sorted(rng.sample(qids, int(max_queries)))
    kept_qrels = {q: qrels[q] for q in qids}
    doc_ids = sorted(corpus)
    if max_docs and len(doc_ids) > max_docs:
        needed = {d for rels in kept_qrels.values() for d in rels if d in corpus}
        others = sorted(set(doc_ids) - needed)
        extra = rng.sample(others, max(0, min(len(others), int(max_docs) - len(needed))))
        doc_ids = sorted(needed | set(extra))
    info = dict(info or {})
    info.update(max_queries=max_queries, max_docs=max_docs)
    return RetrievalSet(
        corpus={d: corpus[d] for d in doc_ids},
        queries={q: queries[q] for q in qids},
        qrels=kept_qrels,
        name=name,
        info=info,
    )


class BeirSource(DataSource):
    """A BEIR-layout dataset: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{train,dev,test}.tsv``.

    Args:
        path: dataset directory.
        eval_split: the reported split (``qrels/<eval_split>.tsv``).
        val_split: in-training validation split; if the file is missing, a held-out slice of the
            training pairs is used. Never equal to ``eval_split``.
        train_split: split whose queries become real training pairs when ``train_queries``.
        train_queries: add the real queries of ``train_split`` as training pairs: one pair per
            document judged relevant (relevance >= 1), with ``score`` = relevance / the split's
            highest relevance, so graded qrels (0-2, 0-3) become graded labels in [0, 1] for
            ``loss=cosine`` / ``loss=cosent`` and binary qrels give 1.0 (ranking losses ignore it).
        pairs_path: extra labelled pairs JSONL (``{"query", "positive", "negatives"?, "score"?}``).
        eval_corpus: ``all`` = search the whole corpus; ``same_group`` = only documents whose group
            (``group_pattern`` group 1 of the id, e.g. the contract of ``cuad_<contract>_<n>``) holds a
            judged document of the split — a cheaper, per-document retrieval task.
        group_pattern: regex whose group 1 is a document's group.
        eval_max_queries / eval_max_docs: optional caps on the reported eval set (say so in reports).
        gen_max_docs: cap on the documents handed to the generator (seeded sample).
        group_negatives: give every training pair this many negatives drawn (seeded) from its
            positive's group (e.g. other passages of the same contract), never a document judged
            relevant to the query. In-batch negatives come from other groups and are easy when the
            eval task ranks one group's passages (``eval_corpus=same_group``); these are not.
        group_batches: lay each group's pairs out together so a batch holds few groups and its
            in-batch negatives come from the positive's group, at no extra encoding
            (:meth:`batch_groups`); a pair whose positive names no group keeps its shuffled place.
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        eval_split: str = "test",
        val_split: str | None = "dev",
        train_split: str = "train",
        train_queries: bool = False,
        pairs_path: str | None = None,
        eval_corpus: str = "all",
        group_pattern: str = r"^(.*)_\d+$",
        eval_max_queries: int | None = None,
        eval_max_docs: int | None = None,
        gen_max_docs: int | None = None,
        group_negatives: int = 0,
        group_batches: bool = False,
        **kwargs: Any,
    ):
        super().__init__(name=name or Path(str(path)).name, **kwargs)
        self.path = Path(str(path)).expanduser()
        self.eval_split = eval_split
        self.val_split = val_split
        self.train_split = train_split
        self.train_queries = bool(train_queries)
        self.pairs_path = pairs_path
        if eval_corpus not in {"all", "same_group"}:
            raise EmbedforgeError(
                f"data.eval_corpus must be 'all' or 'same_group', got {eval_corpus!r}"
            )
        if val_split and val_split == eval_split:
            raise EmbedforgeError(
                f"data.val_split equals data.eval_split ({eval_split!r}): validation must never see the reported split"
            )
        self.eval_corpus = eval_corpus
        self.group_pattern = re.compile(group_pattern)
        self.eval_max_queries = eval_max_queries
        self.eval_max_docs = eval_max_docs
        self.gen_max_docs = gen_max_docs
        self.group_negatives = int(group_negatives or 0)
        if self.group_negatives < 0:
            raise EmbedforgeError(f"data.group_negatives must be >= 0, got {group_negatives}")
        self.group_batches = bool(group_batches)
        self._ds: BeirDataset | None = None
        self._texts: dict[str, str] | None = None

    @property
    def dataset(self) -> BeirDataset:
        if self._ds is None:
            self._ds = load_beir(self.path)
            if self.eval_split not in self._ds.qrels:
                raise EmbedforgeError(
                    f"{self.path}/qrels/{self.eval_split}.tsv not found (data.eval_split); available splits:"
                    f" {self._ds.splits or 'none'}"
                )
        return self._ds

    @property
    def texts(self) -> dict[str, str]:
        if self._texts is None:
            self._texts = self.dataset.texts()
        return self._texts

    def _group(self, doc_id: str) -> str:
        """Group 1 of ``group_pattern``; an id the pattern does not match is its own group."""
        m = self.group_pattern.match(doc_id)
        return m.group(1) if m else doc_id

    def related(self, doc_id: str, group: list[str]) -> set[str]:
        """Documents of ``doc_id``'s group never drawn as its group negatives (none here; a
        hierarchy of codes excludes the positive's ancestors and descendants)."""
        return set()

    def _split_set(self, split: str, max_queries, max_docs, name: str) -> RetrievalSet:
        qrels = self.dataset.qrels[split]
        corpus = self.texts
        info: dict[str, Any] = {"split": split, "corpus": self.eval_corpus, "path": str(self.path)}
        if self.eval_corpus == "same_group":
            groups = sorted({self._group(d) for rels in qrels.values() for d in rels})
            if max_docs:
                # sample whole groups, so a capped set is the same task as the full one (rank a
                # group's own passages), not an easier search over random documents
                sizes = Counter(self._group(d) for d in corpus)
                random.Random(self.seed).shuffle(groups)
                kept, n = [], 0
                for g in groups:
                    if kept and n + sizes[g] > max_docs:
                        break
                    kept.append(g)
                    n += sizes[g]
                groups = kept
                qrels = {
                    q: r for q, r in qrels.items() if any(self._group(d) in set(groups) for d in r)
                }
            wanted = set(groups)
            corpus = {d: t for d, t in corpus.items() if self._group(d) in wanted}
            info["groups"] = len(wanted)
            max_docs = None  # whole groups were sampled instead
        info["corpus_docs_before_sampling"] = len(corpus)
        return subsample(
            corpus, self.dataset.queries, qrels, max_queries, max_docs, self.seed, name, info
        )

    def eval_set(self) -> RetrievalSet:
        return self._split_set(
            self.eval_split,
            self.eval_max_queries,
            self.eval_max_docs,
            f"{self.name}/{self.eval_split}",
        )

    def val_set(self) -> RetrievalSet | None:
        if not self.val_split or self.val_split not in self.dataset.qrels:
            return None
        return self._split_set(
            self.val_split, self.val_max_queries, self.val_max_docs, f"{self.name}/{self.val_split}"
        )

    def real_pairs(self) -> list[Pair]:
        pairs: list[Pair] = []
        if self.train_queries:
            if self.train_split not in self.dataset.qrels:
                raise EmbedforgeError(
                    f"data.train_queries=true but {self.path}/qrels/{self.train_split}.tsv does not exist"
                )
            ds = self.dataset
            qrels = ds.qrels[self.train_split]
            top = max((r for rels in qrels.values() for r in rels.values()), default=1)
            for qid, rels in sorted(qrels.items()):
                for did, rel in sorted(rels.items()):
                    if rel >= 1:
                        pairs.append(
                            {
                                "query": ds.queries[qid],
                                "positive": self.texts[did],
                                "source": "real",
                                "doc_id": did,
                                "query_id": qid,
                                "score": rel / top,  # graded label in (0, 1]
                            }
                        )
        if self.pairs_path:
            pairs.extend(read_pairs(self.pairs_path))
        return pairs

    def train_qrels(self) -> dict[str, dict[str, int]] | None:
        return self.dataset.qrels.get(self.train_split)

    def with_group_negatives(
        self, pairs: list[Pair], stats: dict[str, Any] | None = None
    ) -> list[Pair]:
        """Copies of ``pairs`` with ``group_negatives`` same-group negatives each (see class doc).

        A pair needs a ``doc_id`` in the corpus. Excluded: the positive, its :meth:`related`
        documents and every document judged relevant to the query in the training split. When a group is too small the remaining
        negatives come from the whole corpus, so every pair has the same count (a dense batch).
        """
        n = self.group_negatives
        all_ids = sorted(self.dataset.corpus)
        by_group = self._by_group()
        counts = {"pairs": 0, "from_group": 0, "from_corpus": 0}
        out: list[Pair] = []
        for p in pairs:
            did = p.get("doc_id")
            if did is None or str(did) not in self.dataset.corpus:
                raise EmbedforgeError(
                    f"data.group_negatives={n} needs every training pair to name a corpus doc_id;"
                    f" pair with query {p['query'][:60]!r} has {did!r}"
                )
            did = str(did)
            exclude = {did} | self._not_negatives(p, did, by_group)
            rng = random.Random(f"{self.seed}|{p['query']}|{did}")
            pool = [d for d in by_group[self._group(did)] if d not in exclude]
            chosen = rng.sample(pool, min(n, len(pool)))
            counts["from_group"] += len(chosen)
            if len(chosen) < n and len(all_ids) - len(exclude) < n:
                raise EmbedforgeError(
                    f"data.group_negatives={n}: the corpus has only {len(all_ids) - len(exclude)}"
                    f" documents that are not relevant to query {p['query'][:60]!r}"
                )
            while len(chosen) < n:
                d = rng.choice(all_ids)
                if d not in exclude and d not in chosen:
                    chosen.append(d)
                    counts["from_corpus"] += 1
            out.append({**p, "negatives": [self.texts[d] for d in chosen]})
            counts["pairs"] += 1
        if stats is not None:
            stats.update(counts, num=n, scope="group")
        return out

    def batch_groups(self, pairs: list[Pair]) -> BatchGroups | None:
        """With ``group_batches``: each pair's group and the texts its query must not meet in its
        batch: the documents of its group it never draws as a negative (:meth:`related`) and those
        judged relevant to it in the training split.

        The group is its positive's (``group_pattern`` group 1 of its ``doc_id``). A pair whose
        positive has no group (no corpus ``doc_id``, or an id the pattern does not match) is a
        group of its own, so it keeps its shuffled place: ids that name no groups give the
        batches of ``group_batches=false``."""
        if not self.group_batches:
            return None
        by_group = self._by_group()
        groups: list[str] = []
        exclude: list[tuple[str, ...]] = []
        for i, p in enumerate(pairs):
            did = str(p.get("doc_id"))
            known = p.get("doc_id") is not None and did in self.dataset.corpus
            m = self.group_pattern.match(did) if known else None
            groups.append(m.group(1) if m else f"\x00pair {i}")  # no group: its shuffled place
            not_negatives = self._not_negatives(p, did, by_group) - {did} if known else set()
            exclude.append(tuple(sorted(self.texts[d] for d in not_negatives)))
        return BatchGroups(groups, exclude)

    def _by_group(self) -> dict[str, list[str]]:
        """Every corpus document id by its group, in id order."""
        by_group: dict[str, list[str]] = {}
        for d in sorted(self.dataset.corpus):
            by_group.setdefault(self._group(d), []).append(d)
        return by_group

    def _not_negatives(self, pair: Pair, doc_id: str, by_group: dict[str, list[str]]) -> set[str]:
        """Documents that must never be ``pair``'s negative besides its positive ``doc_id``: its
        :meth:`related` documents and every one judged relevant to its query in the training split."""
        out = self.related(doc_id, by_group[self._group(doc_id)])
        qid = pair.get("query_id")
        train_qrels = self.dataset.qrels.get(self.train_split, {})
        if qid is not None and str(qid) in train_qrels:
            out |= {d for d, r in train_qrels[str(qid)].items() if r > 0}
        return out

    def chunks(self) -> list[Chunk]:
        ids = sorted(self.dataset.corpus)
        if self.gen_max_docs and len(ids) > self.gen_max_docs:
            ids = sorted(random.Random(self.seed).sample(ids, int(self.gen_max_docs)))
        return self._chunks_of(ids)

    def corpus(self) -> list[Chunk]:
        return self._chunks_of(sorted(self.dataset.corpus))

    def _chunks_of(self, ids: list[str]) -> list[Chunk]:
        return [
            {
                "id": i,
                "title": self.dataset.corpus[i]["title"],
                "text": self.dataset.corpus[i]["text"],
            }
            for i in ids
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "eval_split": self.eval_split,
            "val_split": self.val_split
            if self.val_split in self.dataset.qrels
            else "held-out training pairs",
            "train_queries": self.train_queries,
            "corpus_docs": len(self.dataset.corpus),
        }


def read_pairs(path: str | Path, default_source: str = "real") -> list[Pair]:
    """Read a pairs JSONL: ``{"query", "positive", "negatives"?: [str], "source"?, "doc_id"?,
    "score"?: number in [0, 1]}`` per line (``score``: the graded label of ``loss=cosine/cosent``)."""
    pairs: list[Pair] = []
    for lineno, row in enumerate(iter_jsonl(path), 1):
        q, p = row.get("query"), row.get("positive")
        if not isinstance(q, str) or not q.strip() or not isinstance(p, str) or not p.strip():
            raise EmbedforgeError(
                f"{path}: record {lineno} needs non-empty string 'query' and 'positive'"
            )
        negs = row.get("negatives") or []
        if not isinstance(negs, list) or not all(isinstance(n, str) for n in negs):
            raise EmbedforgeError(f"{path}: record {lineno}: 'negatives' must be a list of strings")
        pair: Pair = {"query": q, "positive": p, "source": row.get("source", default_source)}
        if negs:
            pair["negatives"] = negs
        if "doc_id" in row:
            pair["doc_id"] = str(row["doc_id"])
        if row.get("score") is not None:
            score = row["score"]
            if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
                raise EmbedforgeError(
                    f"{path}: record {lineno}: 'score' must be a number in [0, 1], got {score!r}"
                )
            pair["score"] = float(score)
        pairs.append(pair)
    if not pairs:
        raise EmbedforgeError(f"{path} holds no pairs")
    return pairs


class PairsSource(DataSource):
    """A plain pairs JSONL for training, optionally a BEIR dataset to evaluate on.

    Args:
        path: pairs JSONL (``{"query", "positive", "negatives"?, "score"?}`` per line).
        eval_path: BEIR directory for the reported evaluation (else a held-out slice of the pairs).
        eval_split / val_split: as in :class:`BeirSource`.
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        eval_path: str | None = None,
        eval_split: str = "test",
        val_split: str | None = "dev",
        eval_corpus: str = "all",
        eval_max_queries: int | None = None,
        eval_max_docs: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(name=name or Path(str(path)).stem, **kwargs)
        self.path = path
        self._beir = (
            BeirSource(
                eval_path,
                name=self.name,
                eval_split=eval_split,
                val_split=val_split,
                eval_corpus=eval_corpus,
                eval_max_queries=eval_max_queries,
                eval_max_docs=eval_max_docs,
                val_max_queries=self.val_max_queries,
                val_max_docs=self.val_max_docs,
                seed=self.seed,
            )
            if eval_path
            else None
        )

    def real_pairs(self) -> list[Pair]:
        return read_pairs(self.path)

    def eval_set(self) -> RetrievalSet | None:
        return self._beir.eval_set() if self._beir else None

    def val_set(self) -> RetrievalSet | None:
        return self._beir.val_set() if self._beir else None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pairs_path": str(self.path),
            "eval": self._beir.summary() if self._beir else "held-out pairs",
        }


def holdout_sets(
    pairs: list[Pair],
    fraction: float,
    seed: int,
    max_docs: int | None,
    name: str,
    with_eval: bool = True,
    encoder: Any = None,
    max_base: float | None = None,
    batch_size: int = 64,
) -> tuple[list[Pair], RetrievalSet, RetrievalSet | None]:
    """Split pairs into (train, val, eval) when a source has no judged splits.

    Held-out pairs become queries whose relevant document is their positive; every positive of the
    whole pair set is in the searched corpus (distractors). Pairs sharing a query or positive with a
    held-out pair are removed from training so nothing leaks.

    Real pairs pose the test task, so when at least 10 distinct real positives exist the held-out
    queries are real ones (``info["kind"] = "held-out real"``) and generated pairs only train.
    Otherwise validation is held out of the generated pairs (``"held-out synthetic"``) with the
    hardness guard of :mod:`embedforge.data.validation`: word-overlap distractors and, with
    ``encoder`` and ``max_base``, the most lexically trivial queries dropped until the base model's
    NDCG@10 is at most ``max_base``.
    """
    from embedforge.data.validation import (
        HELD_OUT_REAL,
        HELD_OUT_SYNTHETIC,
        harden,
        lexical_distractors,
    )

    rng = random.Random(seed)
    real = [p for p in pairs if p.get("source", "real") == "real"]
    real_positives = {p["positive"] for p in real}
    pool, kind = (real, HELD_OUT_REAL) if len(real_positives) >= 10 else (pairs, HELD_OUT_SYNTHETIC)
    positives = sorted({p["positive"] for p in pool})
    if len(positives) < 10:
        raise EmbedforgeError(
            f"only {len(positives)} distinct positives: too few to hold out validation/eval pairs"
        )
    rng.shuffle(positives)
    n = max(2, int(len(positives) * fraction))
    if kind == HELD_OUT_REAL:  # real queries are few: enough of them to measure anything
        n = max(n, min(20, len(positives) // 5))
    val_pos, eval_pos = set(positives[:n]), set(positives[n : 2 * n] if with_eval else [])
    doc_id = {t: f"d{i}" for i, t in enumerate(sorted({p["positive"] for p in pairs}))}
    corpus = {i: t for t, i in doc_id.items()}
    guarded = kind == HELD_OUT_SYNTHETIC and max_base is not None

    def make(pos: set[str], split: str) -> RetrievalSet:
        queries, qrels = {}, {}
        for k, p in enumerate(x for x in pool if x["positive"] in pos):
            qid = f"{split}{k}"
            queries[qid] = p["query"]
            qrels[qid] = {doc_id[p["positive"]]: 1}
        info: dict[str, Any] = {"split": f"held-out {split}", "kind": kind}
        docs = corpus
        if guarded and split == "val":
            ids, added = lexical_distractors(corpus, queries, qrels, max_docs, seed)
            docs = {d: corpus[d] for d in ids}
            info["guard"] = {"distractors": "word overlap", "lexical_distractors": added}
        rset = subsample(docs, queries, qrels, None, max_docs, seed, f"{name}/{split}", info)
        if guarded and split == "val" and encoder is not None:
            rset = harden(rset, encoder, float(max_base), batch_size=batch_size)
        return rset

    held_q = {p["query"] for p in pool if p["positive"] in val_pos | eval_pos}
    train = [
        p for p in pairs if p["positive"] not in val_pos | eval_pos and p["query"] not in held_q
    ]
    return train, make(val_pos, "val"), make(eval_pos, "eval") if with_eval else None


__all__ = [
    "DataSource",
    "BeirSource",
    "PairsSource",
    "read_pairs",
    "holdout_sets",
    "subsample",
    "doc_text",
]
