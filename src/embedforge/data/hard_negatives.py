"""Hard-negative mining with the base model: passages that look relevant but are not.

For each query, retrieve from the corpus with the base model (exact search, corpus embedded once),
take candidates from a rank window (the very top is skipped: it is dense with unlabelled
positives), drop anything known to be relevant, drop likely false negatives (a score within
``margin`` of the positive's), then sample ``num_negatives`` with a seed. Reference: the
"denoised" hard negatives of RocketQA and the rank-window sampling of Tevatron / NV-Retriever
(positive-aware margin).

``method="bm25"`` ranks lexically instead (BM25 via ``bm25s``, the ``lexical`` extra; DPR's BM25
negatives): the same window and exclusions; only documents sharing a term with the query are
candidates, and no margin applies (a document out-scoring the positive lexically is the
confusion these negatives teach, not a sign of an unlabelled positive).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedforge.errors import EmbedforgeError
from embedforge.eval.ann import SearchSettings
from embedforge.types import Pair, doc_text

if TYPE_CHECKING:
    from embedforge.data.sources import DataSource
from embedforge.io import stable_hash, write_jsonl


def mine_hard_negatives(
    pairs: list[Pair],
    corpus_texts: list[str] | dict[str, str],
    encoder: Any,
    num_negatives: int = 4,
    rank_window: tuple[int, int] | list[int] = (10, 100),
    margin: float = 0.05,
    seed: int = 0,
    qrels: dict[str, dict[str, int]] | None = None,
    batch_size: int = 64,
    out_path: str | Path | None = None,
    stats: dict[str, Any] | None = None,
    method: str = "dense",
    fill: bool = False,
    search: SearchSettings | None = None,
) -> list[Pair]:
    """Return copies of ``pairs`` with ``"negatives"`` (replacing any existing ones).

    Args:
        pairs: ``{"query", "positive", "doc_id"?, "query_id"?}``.
        corpus_texts: candidate passages; a dict ``id -> text`` also lets ``doc_id`` and ``qrels``
            exclude positives by id.
        encoder: anything with ``encode(texts, kind, batch_size) -> (N, D)`` normalized.
        num_negatives: negatives per pair (fewer when the window runs out, unless ``fill``).
        rank_window: ``(lo, hi)``: candidates are the retrieved ranks ``lo .. hi-1`` (0-based).
        margin: drop a candidate scoring above ``(1 - margin) * positive score`` (likely an
            unlabelled positive). ``None`` disables; dense ranking only.
        seed: sampling seed; the result is a deterministic function of inputs and seed.
        qrels: ``query id or query text -> {doc id: relevance}``: every judged-relevant document of
            the query is excluded too.
        batch_size: encoding batch size.
        out_path: write the mined pairs there atomically as JSONL.
        stats: filled with counts of excluded candidates, when given.
        method: ``dense`` (rank with ``encoder``) or ``bm25`` (rank lexically; ``encoder`` unused).
        fill: when the window holds fewer than ``num_negatives`` candidates (a short query
            shares a term with few documents under BM25), draw the rest at random from the
            corpus, never a positive or a candidate the window dropped (``filled_random``): the
            pipeline drops pairs without negatives, and a real query must not be lost for that.
        search: dense ranking is exact, or FAISS past ``search.approx_above`` documents (how,
            and its recall against exact search: ``stats["search"]``).
    """
    lo, hi = int(rank_window[0]), int(rank_window[1])
    if not 0 <= lo < hi:
        raise EmbedforgeError(f"rank_window must satisfy 0 <= lo < hi, got {list(rank_window)}")
    if isinstance(corpus_texts, dict):
        ids: list[str] | None = [str(i) for i in corpus_texts]
        texts = [corpus_texts[i] for i in corpus_texts]
    else:
        ids, texts = None, list(corpus_texts)
    if not texts:
        raise EmbedforgeError("hard-negative mining needs a non-empty corpus")
    if method not in RANKERS:
        raise EmbedforgeError(
            f"data.hard_negatives.method must be one of {sorted(RANKERS)}, got {method!r}"
        )
    pos_texts, pos_ids = known_positives(pairs, qrels or {})
    ranker = RANKERS[method](encoder, texts, pairs, batch_size, hi, search)

    def is_positive(query: str, idx: int) -> bool:
        return texts[idx] in pos_texts[query] or (ids is not None and ids[idx] in pos_ids[query])

    counts = {"positive": 0, "false_negative": 0, "pairs_short": 0, "filled_random": 0}
    out: list[Pair] = []
    for p in pairs:
        q = p["query"]
        top, scores, pos_score = ranker.ranked(q, p["positive"])
        threshold = (
            None if margin is None or pos_score is None else (1.0 - float(margin)) * pos_score
        )
        candidates, seen = _window_candidates(
            q, top[lo:hi].tolist(), scores[lo:hi].tolist(), texts, is_positive, threshold, counts
        )
        rng = random.Random(stable_hash(seed, q, p["positive"]))
        chosen = rng.sample(candidates, min(int(num_negatives), len(candidates)))
        if len(chosen) < num_negatives:
            counts["pairs_short"] += 1
        if len(chosen) < num_negatives and fill:
            filled = _random_negatives(
                rng, texts, num_negatives - len(chosen), seen, is_positive, q
            )
            counts["filled_random"] += len(filled)
            chosen += filled
        out.append({**p, "negatives": chosen})
    if stats is not None:
        stats.update(counts, pairs=len(out), corpus=len(texts), method=method)
        stats["search"] = ranker.search_info
    if out_path is not None:
        write_jsonl(out_path, out)
    return out


def _window_candidates(
    query: str,
    ranked: list[int],
    scores: list[float],
    texts: list[str],
    is_positive: Any,
    threshold: float | None,
    counts: dict[str, int],
) -> tuple[list[str], set[str]]:
    """The window's texts that may serve as negatives of ``query``, and every text looked at
    (candidates, positives, likely positives above ``threshold``; each counted in ``counts``)."""
    candidates: list[str] = []
    seen: set[str] = set()
    for idx, score in zip(ranked, scores):
        if idx < 0:  # an approximate search found fewer than k
            continue
        text = texts[idx]
        if text in seen:
            continue
        seen.add(text)
        if is_positive(query, idx):
            counts["positive"] += 1
        elif threshold is not None and score > threshold:
            counts["false_negative"] += 1
        else:
            candidates.append(text)
    return candidates, seen


def _random_negatives(
    rng: random.Random,
    texts: list[str],
    k: int,
    seen: set[str],
    is_positive: Any,
    query: str,
    tries: int = 20,
) -> list[str]:
    """Up to ``k`` corpus texts drawn at random that are not in ``seen`` and not a positive of
    ``query`` (a bounded number of draws: a corpus of positives yields fewer)."""
    out: list[str] = []
    for _ in range(tries * k):
        if len(out) == k:
            break
        idx = rng.randrange(len(texts))
        if texts[idx] not in seen and not is_positive(query, idx):
            seen.add(texts[idx])
            out.append(texts[idx])
    return out


def known_positives(
    pairs: list[Pair], qrels: dict[str, dict[str, int]]
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every positive of each query (a query can have several pairs): by text, and by doc id
    (the pairs' ``doc_id`` plus every judged-relevant document of ``qrels``)."""
    pos_texts: dict[str, set[str]] = defaultdict(set)
    pos_ids: dict[str, set[str]] = defaultdict(set)
    for p in pairs:
        q = p["query"]
        pos_texts[q].add(p["positive"])
        if p.get("doc_id") is not None:
            pos_ids[q].add(str(p["doc_id"]))
        for key in (p.get("query_id"), q):
            if key is not None and str(key) in qrels:
                pos_ids[q].update(d for d, rel in qrels[str(key)].items() if rel > 0)
    return pos_texts, pos_ids


class _Embeddings:
    """Dense ranking: the corpus (once), the distinct queries and the positives missing from the
    corpus, embedded with the base model; the top ``k`` of every query found at construction."""

    def __init__(
        self,
        encoder: Any,
        texts: list[str],
        pairs: list[Pair],
        batch_size: int,
        k: int,
        search: SearchSettings | None = None,
    ):
        self.docs = encoder.encode(texts, "doc", batch_size)  # (N, D)
        queries = list(dict.fromkeys(p["query"] for p in pairs))
        self.queries = encoder.encode(queries, "query", batch_size)  # (Q, D)
        self.query_row = {q: i for i, q in enumerate(queries)}
        self.doc_row = {t: i for i, t in enumerate(texts)}
        missing = list(
            dict.fromkeys(p["positive"] for p in pairs if p["positive"] not in self.doc_row)
        )
        self.missing = (
            encoder.encode(missing, "doc", batch_size)
            if missing
            else np.zeros((0, self.docs.shape[1]), np.float32)
        )
        self.missing_row = {t: i for i, t in enumerate(missing)}
        from embedforge.eval.retrieval import retrieve

        self.top, self.scores, self.search_info = retrieve(self.queries, self.docs, k, search)

    def ranked(self, query: str, positive: str) -> tuple[np.ndarray, np.ndarray, float | None]:
        """The query's top-k document indices and scores, and the positive's score."""
        row = self.query_row[query]
        return self.top[row], self.scores[row], float(self.queries[row] @ self.positive(positive))

    def positive(self, text: str) -> np.ndarray:
        i = self.doc_row.get(text)
        return self.docs[i] if i is not None else self.missing[self.missing_row[text]]


class _BM25:
    """Lexical ranking with BM25 (``bm25s``: scikit-learn tokenization, English stopwords, no
    stemming). Documents with score 0 (no shared term) are never candidates; no margin applies
    (``ranked`` gives no positive score)."""

    def __init__(
        self,
        encoder: Any,
        texts: list[str],
        pairs: list[Pair],
        batch_size: int,
        k: int,
        search: SearchSettings | None = None,
    ):
        self.search_info = {"method": "bm25", "n_docs": len(texts)}
        try:
            import bm25s
        except ImportError:
            raise EmbedforgeError(
                "data.hard_negatives.method=bm25 needs bm25s (an embedforge dependency): pip install bm25s"
            ) from None
        self._tokenize = lambda xs: bm25s.tokenize(
            xs, stopwords="en", return_ids=False, show_progress=False
        )
        self.index = bm25s.BM25()
        self.index.index(self._tokenize(texts), show_progress=False)
        self.n, self.k = len(texts), k
        queries = list(dict.fromkeys(p["query"] for p in pairs))
        self.query_tokens = dict(zip(queries, self._tokenize(queries)))

    def ranked(self, query: str, positive: str) -> tuple[np.ndarray, np.ndarray, float | None]:
        tokens = [t for t in self.query_tokens[query] if t in self.index.vocab_dict]
        scores = self.index.get_scores(tokens) if tokens else np.zeros(self.n, np.float32)  # (N,)
        k = min(self.k, int((scores > 0).sum()))  # a lexical negative shares a term
        top = np.argsort(-scores, kind="stable")[:k]
        return top, scores[top], None


#: ``data.hard_negatives.method`` -> ranker (``ranked(query, positive)``)
RANKERS = {"dense": _Embeddings, "bm25": _BM25}


def mine_for_pipeline(
    pairs: list[Pair],
    data: DataSource,
    encoder: Any,
    seed: int,
    stats: dict[str, Any] | None = None,
    search: SearchSettings | None = None,
) -> list[Pair]:
    """Mine with the base model over every document of the source (``data.corpus()``, not the
    generator's sample), as ``data.hard_negatives`` says.

    Judged-relevant documents of the source's training split are excluded too (BEIR sources).
    ``search``: exact, or FAISS past ``search.approx_above`` documents (:mod:`embedforge.eval.ann`).
    """
    opts = dict(data.hard_negatives)
    corpus = {str(c["id"]): doc_text(c) for c in data.corpus()}
    if stats is not None:
        stats["searched_docs"] = len(corpus)
    return mine_hard_negatives(
        pairs,
        corpus,
        encoder,
        num_negatives=int(opts.get("num", 4)),
        rank_window=tuple(opts.get("rank_window", (10, 100))),
        margin=opts.get("margin", 0.05),
        seed=seed,
        qrels=data.train_qrels(),
        stats=stats,
        method=str(opts.get("method", "dense")),
        fill=bool(opts.get("fill", True)),
        search=search,
    )
