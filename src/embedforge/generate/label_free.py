"""Label-free signals: what a run without real queries can measure about its fine-tuned weights.

A run trained on pairs generated from the corpus has no labelled query to tell it whether the
fine-tuned model retrieves better for its users. These are the candidate signals it can compute
from the corpus alone, base model vs fine-tuned; ``scripts/meta_eval_signals.py`` measures how
well each predicts the real test change on sets that do have labels (docs/offline-pairs.md,
"Label-free signals"), and :data:`MEASURED` keeps what it found, for runs to state.

- **cross-strategy validation** (:func:`cross_strategy_set`): queries of the offline strategies a
  run did *not* train on, each judged by the passage it was cut from, among every probe passage;
- **pseudo-qrels** (:func:`pseudo_qrels_set`): for generated queries of every strategy, the
  passages that both BM25 and the base model rank in their top 10 count as relevant;
- **neighbourhood overlap** (:func:`neighbour_overlap`): the share of each passage's 10 nearest
  passages that stay the same after fine-tuning;
- **the lexical margin** (:func:`lexical_margin`, before training, base model only): the base
  model's NDCG@10 minus BM25's on generated queries of every strategy. Not a measure of the
  fine-tuned weights but of the corpus: offline pairs helped where BM25 was significantly ahead
  of the base model and not elsewhere (the default guard).

All are built on a :class:`ProbeSet`: a seeded sample of the run's documents and offline
pairs of every strategy from them (the copy filter applies, as in training).

A label-free run ships its fine-tuned weights only when the signal chosen by the meta-evaluation
(``eval.label_free_guard``) also rose from the base model (:class:`Guard`), and says in its
report what that signal measured and how well it predicted real test changes (:data:`MEASURED`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedforge.eval.retrieval import RetrievalSet, search
from embedforge.types import Chunk, Pair


@dataclass
class ProbeSet:
    """``docs``: every pair's positive (its passage with the query cut out where the copy filter
    did), then the sampled documents that gave no pair, as distractors; ``pairs``: offline pairs
    of every strategy, shuffled; ``pairs[i]``'s positive is ``docs[i]``."""

    docs: list[str]
    pairs: list[Pair]

    def corpus(self) -> dict[str, str]:
        return {f"d{i}": t for i, t in enumerate(self.docs)}


def probe_set(chunks: list[Chunk], n_docs: int = 400, seed: int = 0) -> ProbeSet:
    """:class:`ProbeSet` of ``n_docs`` documents sampled from ``chunks`` with ``seed``."""
    from embedforge.generate.offline import STRATEGIES, OfflineGenerator

    rng = random.Random(seed)
    sample = rng.sample(chunks, min(n_docs, len(chunks)))
    pairs = OfflineGenerator(strategies=list(STRATEGIES), seed=seed).generate(sample)
    rng.shuffle(pairs)
    paired = {p["doc_id"] for p in pairs}
    docs = [p["positive"] for p in pairs] + [c["text"] for c in sample if c["id"] not in paired]
    return ProbeSet(docs, pairs)


def cross_strategy_set(
    probe: ProbeSet, trained: set[str], max_queries: int = 120
) -> RetrievalSet | None:
    """Queries of the strategies not in ``trained``, each relevant to its own positive; None when
    every probe pair comes from a trained strategy."""
    held = [(i, p) for i, p in enumerate(probe.pairs) if p["strategy"] not in trained]
    held = held[:max_queries]
    if not held:
        return None
    return RetrievalSet(
        corpus=probe.corpus(),
        queries={f"q{n}": p["query"] for n, (_, p) in enumerate(held)},
        qrels={f"q{n}": {f"d{i}": 1} for n, (i, _) in enumerate(held)},
        name="cross-strategy",
        info={"strategies": sorted({p["strategy"] for _, p in held})},
    )


def bm25_top(docs: list[str], queries: list[str], k: int = 10) -> np.ndarray:
    """Row ``i``: the indices of BM25's top ``k`` of ``docs`` for ``queries[i]`` (``bm25s``:
    English stopwords, no stemming)."""
    import bm25s

    def tokens(texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)

    index = bm25s.BM25()
    index.index(tokens(docs), show_progress=False)
    top, _ = index.retrieve(tokens(queries), k=min(k, len(docs)), show_progress=False)
    return np.asarray(top)


def lexical_margin(
    probe: ProbeSet, base: Any, batch_size: int = 64, seed: int = 0, k: int = 10
) -> dict[str, Any]:
    """The ``base`` encoder's NDCG@10 minus BM25's on every probe query (each judged by the passage
    it was generated from, among all probe passages), with the paired 95% interval of the
    difference: how well the base model already handles the documents' own queries, measured
    against word overlap. Offline pairs are built from word overlap (key phrases, spans, titles);
    they were measured to help where BM25 is ahead of the base model and not where it is not."""
    from embedforge.eval.retrieval import evaluate
    from embedforge.eval.significance import paired_delta

    queries = [p["query"] for p in probe.pairs]
    rset = RetrievalSet(
        corpus=probe.corpus(),
        queries={f"q{i}": q for i, q in enumerate(queries)},
        qrels={f"q{i}": {f"d{i}": 1} for i in range(len(queries))},
        name="lexical-margin",
    )
    dense = evaluate(base, rset, ["ndcg@10"], batch_size, show_progress=False).per_query
    top = bm25_top(probe.docs, queries, k)
    lexical = [
        next((1 / np.log2(r + 2) for r, j in enumerate(top[i]) if int(j) == i), 0.0)
        for i in range(len(queries))
    ]
    base_q = [dense[f"q{i}"]["ndcg@10"] for i in range(len(queries))]
    d = paired_delta(lexical, base_q, seed=seed)
    return {
        "n_queries": len(queries),
        "probe_docs": len(probe.docs),
        "base": round(float(np.mean(base_q)), 6),
        "bm25": round(float(np.mean(lexical)), 6),
        "margin": round(d["delta"], 6),
        "low": round(d["low"], 6),
        "high": round(d["high"], 6),
    }


def bm25_ahead(margin: dict[str, Any], min_delta: float = 0.0) -> bool:
    """Whether BM25 is significantly ahead of the base model in a :func:`lexical_margin` record
    (its interval's upper bound below ``-min_delta``): the corpora where offline pairs were
    measured to help."""
    return margin["high"] < -min_delta


def corpus_margin(
    chunks: list[Chunk], base: Any, probe_docs: int = 400, batch_size: int = 64, seed: int = 0
) -> dict[str, Any] | None:
    """:func:`lexical_margin` on a :func:`probe_set` of ``probe_docs`` of ``chunks``; None when
    the documents give no offline query."""
    probe = probe_set(chunks, probe_docs, seed)
    return lexical_margin(probe, base, batch_size, seed) if probe.pairs else None


def offline_generated(pairs: list[Pair]) -> bool:
    """Whether ``pairs`` hold generated pairs and every one comes from an offline strategy: the
    pairs :func:`lexical_margin` speaks for."""
    from embedforge.generate.offline import STRATEGIES

    generated = [p for p in pairs if p.get("source", "real") != "real"]
    return bool(generated) and all(p.get("strategy") in STRATEGIES for p in generated)


def mix_check(
    pairs: list[Pair],
    documents: Callable[[], list[Chunk]],
    base: Any,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any] | None:
    """For a run's mix choice (:mod:`embedforge.train.mix_choice`): the :func:`corpus_margin` of
    its ``documents()`` with ``signal`` and ``bm25_ahead`` added, or None where the check does not
    speak for the generated ``pairs`` (not offline ones) or the documents give no offline query."""
    if not offline_generated(pairs):
        return None
    m = corpus_margin(documents(), base, batch_size=batch_size, seed=seed)
    return None if m is None else {"signal": LEXICAL, **m, "bm25_ahead": bm25_ahead(m)}


def pseudo_qrels_set(
    probe: ProbeSet, base: Any, max_queries: int = 120, k: int = 10, batch_size: int = 64
) -> RetrievalSet:
    """The first ``max_queries`` probe queries, relevant to the passages in both BM25's and the
    ``base`` encoder's top ``k`` (queries with no such passage are left out)."""
    queries = [p["query"] for p in probe.pairs[:max_queries]]
    lexical = bm25_top(probe.docs, queries, k)
    q_emb = base.encode(queries, "query", batch_size, show_progress=False)
    d_emb = base.encode(probe.docs, "doc", batch_size, show_progress=False)
    dense, _ = search(q_emb, d_emb, k)
    qrels = {}
    for n in range(len(queries)):
        both = {int(j) for j in lexical[n]} & {int(j) for j in dense[n]}
        if both:
            qrels[f"q{n}"] = {f"d{j}": 1 for j in sorted(both)}
    return RetrievalSet(
        corpus=probe.corpus(),
        queries={f"q{n}": q for n, q in enumerate(queries)},
        qrels=qrels,
        name="pseudo-qrels",
    )


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's ``k`` nearest rows (itself excluded) that ``a``'s and ``b``'s
    embeddings (normalized, same rows) have in common: 1 = no neighbourhood moved."""

    def nearest(e: np.ndarray) -> np.ndarray:
        s = e @ e.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind="stable")[:, :k]

    na, nb = nearest(a), nearest(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


#: the guard signal that adds no check: the run's own validation on held-out generated pairs (it
#: already chose fine-tuned weights over the base model); the guard then only interpolates
VALIDATION = "generated_validation"
#: the guard that checks the corpus before training (:func:`lexical_margin`): fine-tuned weights
#: ship only where BM25 is significantly ahead of the base model on the documents' own queries
LEXICAL = "lexical_margin"
#: what each guard signal measures, for the run's report and log
MEASURES = {
    LEXICAL: (
        "the base model's NDCG@10 minus BM25's on generated queries of the run's documents, before"
        " training: fine-tuned weights ship only where BM25 is significantly ahead"
    ),
    VALIDATION: "NDCG@10 on held-out generated pairs (the run's own validation)",
    "cross_strategy": "NDCG@10 on queries of the offline strategies the run did not train on",
    "pseudo_qrels": "NDCG@10 against the passages BM25 and the base model agree on",
}
#: how well each signal predicted the real test change of label-free runs: 28 runs (4 sets with real
#: test queries x 7 recipes; scripts/meta_eval_signals.py, docs/offline-pairs.md "Label-free
#: signals", 2026-12-07): Spearman's rho with test delta NDCG@10 over all runs and its bootstrap
#: interval, the mean rho within a set, and what shipping the ``alpha`` interpolation (the default
#: guard's) only when the signal rose (else the base model) gave: harmful models shipped (test
#: delta < -0.005) and the share of the unguarded runs' positive gain kept. ``lexical_margin`` is
#: one value per corpus (4 corpora; the rule was found on the same runs it is judged on): its rho
#: is BM25's lead over the base against the test delta, and it has no within-set rho
MEASURED: dict[str, dict[str, Any]] = {
    LEXICAL: {
        "runs": 28,
        "corpora": 4,
        "spearman": 0.293,
        "low": -0.129,
        "high": 0.668,
        "within_set": None,
        "alpha": 0.25,
        "harm_shipped": 0,
        "gain_kept": 0.827,
    },
    VALIDATION: {
        "runs": 28,
        "spearman": 0.475,
        "low": 0.111,
        "high": 0.742,
        "within_set": 0.12,
        "alpha": 0.25,
        "harm_shipped": 4,
        "gain_kept": 0.851,
    },
    "cross_strategy": {
        "runs": 28,
        "spearman": 0.180,
        "low": -0.297,
        "high": 0.641,
        "within_set": 0.58,
        "alpha": 0.25,
        "harm_shipped": 1,
        "gain_kept": 0.423,
    },
    "pseudo_qrels": {  # never above the base model: as a gate it ships nothing
        "runs": 28,
        "spearman": 0.191,
        "low": -0.281,
        "high": 0.641,
        "within_set": 0.66,
        "alpha": 0.25,
        "harm_shipped": 0,
        "gain_kept": 0.0,
    },
}


def score(encoder: Any, rset: RetrievalSet, batch_size: int = 64) -> float:
    """NDCG@10 of ``encoder`` on ``rset``."""
    from embedforge.eval.retrieval import evaluate

    return evaluate(encoder, rset, ["ndcg@10"], batch_size, show_progress=False).metrics["ndcg@10"]


@dataclass
class Guard:
    """A label-free run's guard: ``signal``'s set and the base model's score on it (taken before
    training; none for :data:`VALIDATION`); :meth:`check` scores the fine-tuned weights."""

    signal: str
    rset: RetrievalSet | None
    base: float
    min_delta: float = 0.0
    alpha: float = 1.0  # when it rose: ship alpha * fine-tuned + (1 - alpha) * base (WiSE-FT)
    batch_size: int = 64
    info: dict[str, Any] = field(default_factory=dict)
    #: a check decided before training (:data:`LEXICAL`): whether it supports shipping
    decided: bool | None = None

    def describe(self) -> dict[str, Any]:
        """What the guard's signal is, what it measures and how well it was measured to predict
        real test changes: the head of every ``label_free`` record."""
        return {
            "signal": self.signal,
            "measures": MEASURES[self.signal],
            "trust": MEASURED.get(self.signal),
        }

    def summary(self, record: dict[str, Any]) -> str:
        """One phrase for the log: the signal, what it read, and whether it supports shipping."""
        if "delta" in record:
            verdict = "" if record["supports"] else " did not rise"
            return f"{self.signal} {record['base']:.4f} -> {record['finetuned']:.4f}{verdict}"
        if "margin" in record:
            verdict = "" if record["supports"] else ": BM25 not significantly ahead"
            bounds = f"[{record['low']:+.4f}, {record['high']:+.4f}]"
            return f"{self.signal} {record['margin']:+.4f} {bounds}{verdict}"
        return f"{self.signal} rose"

    def check(self, encoder: Any) -> dict[str, Any]:
        """The record ``metrics.json`` keeps (``label_free``): the signal's base and fine-tuned
        values, whether it supports shipping (rose by more than ``min_delta``; always for
        :data:`VALIDATION`, which chose the weights), what it measures and how well it was
        measured to predict real test changes."""
        record = self.describe()
        if self.rset is None:
            supports = True if self.decided is None else self.decided
            return {**record, "supports": supports, **self.info}
        finetuned = score(encoder, self.rset, self.batch_size)
        delta = finetuned - self.base
        return {
            **record,
            "n_queries": len(self.rset.qrels),
            "base": round(self.base, 6),
            "finetuned": round(finetuned, 6),
            "delta": round(delta, 6),
            "min_delta": self.min_delta,
            "supports": delta > self.min_delta,
            **self.info,
        }


def build_guard(
    signal: str,
    chunks: list[Chunk],
    trained: set[str],
    base: Any,
    probe_docs: int = 400,
    max_queries: int = 120,
    min_delta: float = 0.0,
    alpha: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> Guard | None:
    """The :class:`Guard` of ``signal`` (:data:`MEASURES`) from the run's documents, the
    strategies it trains on and its ``base`` encoder (scored now); None when the documents give
    no query for it."""
    from embedforge.errors import EmbedforgeError

    if signal not in MEASURES:
        raise EmbedforgeError(
            f"eval.label_free_guard.signal: unknown {signal!r}; choose from {list(MEASURES)}"
        )
    if signal == VALIDATION:
        return Guard(signal, None, float("nan"), min_delta, alpha, batch_size)
    if signal == LEXICAL:
        m = corpus_margin(chunks, base, probe_docs, batch_size, seed)
        if m is None:
            return None
        ahead = bm25_ahead(m, min_delta)
        return Guard(signal, None, m["base"], min_delta, alpha, batch_size, m, decided=ahead)
    probe = probe_set(chunks, probe_docs, seed)
    if signal == "cross_strategy":
        rset = cross_strategy_set(probe, trained, max_queries)
    else:
        rset = pseudo_qrels_set(probe, base, max_queries, batch_size=batch_size)
    if rset is None or not rset.qrels:
        return None
    info = {"probe_docs": len(probe.docs), **rset.info}
    return Guard(signal, rset, score(base, rset, batch_size), min_delta, alpha, batch_size, info)


def trust_text(record: dict[str, Any]) -> str:
    """One sentence for a label-free run's headline and log: what chose its model and how far
    that can be trusted, and the way to a real number."""
    trust = record.get("trust")
    signal = record["signal"]
    checked = (
        ""
        if signal == VALIDATION
        else ", checked against BM25 on the documents' own queries"
        if signal == LEXICAL
        else f", checked by {signal.replace('_', '-')}"
    )
    measured = (
        " (how well this predicts real retrieval is not measured)"
        if not trust
        else f" (over {trust['runs']} label-free runs on {trust['corpora']} corpora judged by real"
        f" queries this check shipped {trust['harm_shipped']} harmful models and kept"
        f" {trust['gain_kept']:.0%} of the gain)"
        if signal == LEXICAL
        else f" (over {trust['runs']} label-free runs judged by real queries this signal predicted"
        f" the test change with Spearman {trust['spearman']:+.2f}"
        f" [{trust['low']:+.2f}, {trust['high']:+.2f}])"
    )
    wise = (
        f"; shipped as the interpolation {record['alpha']:g} x fine-tuned + the rest base"
        if record.get("alpha") is not None
        else ""
    )
    return (
        f"chosen without real queries: validation on generated pairs{checked}{measured}{wise};"
        " a few real queries (data.eval_path) give a real number"
    )
