"""Offline (no LLM, no labels) training pairs from the corpus alone.

Naive inverse-cloze pairs (a sentence as the query, the rest of the passage as the positive)
*lower* a strong base model's NDCG (see docs/offline-pairs.md), so the strategies here imitate what
users type instead:

- ``title_body`` (old name ``title``): the document's title -> its text *without* the title (the
  (title, body) pair of E5/GTE pre-training), where titles are informative (shared by few passages);
- ``title_terms``: 2-4 salient words of the title, not a contiguous run of it -> the document
  (short names and synonyms, what a coder types for a one-line entry such as an ICD-10 code);
- ``keyphrase``: 3-6 salient words of the passage (highest tf-idf in the corpus, in reading order),
  a short keyword search query;
- ``title_keyphrase``: title + keyphrases (what a user searching inside one named document types);
- ``span``: a short contiguous span (a clause fragment) -> the passage with the span *removed*;
- ``heading_section`` (old name ``heading``): a section heading found inside the passage ("12. Governing Law.", "Section 3.2
  Term.", "## Returns") -> the passage with the heading *removed*, so the model must learn what a
  section about that topic says (the (section title, section text) pairs of E5/GTE pre-training);
  headings name clause/topic types, which is what users ask about ("which law governs?");
- ``title_heading``: title; heading -> the passage without the heading: scoped to one document, so
  another document's section with the same heading is a true negative (a bare "Termination" query
  has true answers in every contract);
- ``ict``: classic inverse cloze (a sentence as the query, removed from its passage), kept for
  comparison: it is the variant that hurts.

No query may be solved by copying: a final filter checks every pair, and where the normalized
query (lower-case words) occurs in the normalized positive it removes that occurrence from the
positive (``stats["copyable_repaired"]``) or, when too little would be left, drops the pair
(``stats["copyable_dropped"]``). Passage-derived strategies (``keyphrase``, ``title_keyphrase``,
``span``, ``ict``) need a passage of at least ``min_passage_words`` words: a keyphrase of a
one-line text names a category, not a document.

``strategies: auto`` lets the base model choose (:mod:`embedforge.generate.probe`): it scores
``probe.pairs`` pairs of each candidate strategy and keeps the hardest ones whose MRR@10 lies in
``probe.mrr_band``; the table is in ``stats["probe"]`` (``metrics.json`` -> ``generation``).

Every pair is a deterministic function of (corpus, config, seed).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from embedforge.types import Chunk, Pair, doc_text

_WORD = re.compile(r"[A-Za-z][A-Za-z\-']+")
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just may me
    might more most must my myself no nor not now of off on once only or other our ours ourselves out over
    own same shall she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up upon very was we were what when where which while who whom why
    will with within without would you your yours yourself yourselves hereby herein hereof hereto thereof
    thereto therein whereas whether such said shall any each per via""".split()
)
STRATEGIES = (
    "title_body",
    "title_terms",
    "keyphrase",
    "title_keyphrase",
    "span",
    "heading_section",
    "title_heading",
    "ict",
)
#: old names, kept working: ``title`` now also removes the title from its positive
ALIASES = {"title": "title_body", "heading": "heading_section"}
AUTO = "auto"
#: passage-derived strategies: they need a passage, not a one-line entry
_PASSAGE = frozenset({"keyphrase", "title_keyphrase", "span", "ict"})
_NORM = re.compile(r"[^\W_]+")
_CONNECT = r"(?:of|and|to|the|for|in|on|or|by|with|&|/)"
_HWORD = rf"(?:[A-Z][A-Za-z'\-]*|{_CONNECT})"
# numbered section heading: "12. Governing Law." / "Section 3.2 Term." / "ARTICLE IV Indemnification."
_NUMBERED = re.compile(
    rf"(?:(?<=\s)|^)(?:(?:Section|SECTION|Article|ARTICLE)\s+)?(?:\d{{1,2}}(?:\.\d{{1,2}}){{0,2}}|[IVX]{{1,4}})"
    rf"\.?\s+(?P<h>[A-Z][A-Za-z'\-]*(?:\s{_HWORD}){{0,5}})\.(?=\s|$)"
)
_MARKDOWN = re.compile(r"^#{1,6}\s+(?P<h>[^\n#]{3,80})$", re.M)
_SENT = re.compile(r"(?<=[.!?;])\s+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def normalized(text: str) -> str:
    """Lower-case words (letters and digits) joined by single spaces: what "verbatim" compares."""
    return " ".join(_NORM.findall(text.lower()))


def copyable(query: str, positive: str) -> bool:
    """True when the normalized query occurs, on word boundaries, in the normalized positive."""
    q = normalized(query)
    return bool(q) and f" {q} " in f" {normalized(positive)} "


def remove_query(query: str, positive: str) -> str:
    """``positive`` with every occurrence of ``query``'s words (any case, any punctuation or
    spacing between them) removed, whitespace collapsed."""
    words = _NORM.findall(query.lower())
    if not words:
        return positive
    pattern = r"(?<![^\W_])" + r"[\W_]+".join(re.escape(w) for w in words) + r"(?![^\W_])"
    out = re.sub(pattern, " ", positive, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", out).strip()


@dataclass(frozen=True)
class _CorpusStats:
    """Word statistics of the chunks being turned into pairs (one pass over the corpus)."""

    idf: dict[str, float]  # passage words
    title_idf: dict[str, float]  # title words
    title_count: Counter  # chunks per lower-cased title
    max_share: int  # a title naming more chunks than this is not informative

    @classmethod
    def of(cls, docs: list[tuple[Chunk, list[str]]], max_title_share: float) -> _CorpusStats:
        n = len(docs)
        df = Counter(w for _, ws in docs for w in {x.lower() for x in ws})
        title_df = Counter(
            w for c, _ in docs for w in {x.lower() for x in _words(c.get("title") or "")}
        )
        return cls(
            idf={w: math.log((n + 1) / (k + 0.5)) for w, k in df.items()},
            title_idf={w: math.log((n + 1) / (k + 0.5)) for w, k in title_df.items()},
            title_count=Counter((c.get("title") or "").strip().lower() for c, _ in docs),
            max_share=max(1, int(max_title_share * n)),
        )


class OfflineGenerator:
    """Self-supervised pairs from chunks, seeded and reproducible.

    Args:
        strategies: any of :data:`STRATEGIES` (old names in :data:`ALIASES` work), or ``auto``:
            the base model chooses among ``probe.candidates`` (see module doc). Each document gets
            ``pairs_per_doc`` pairs from the strategies that apply to it, chosen with the seed.
        pairs_per_doc: pairs per document.
        max_pairs: cap on the total (seeded sample).
        min_query_words / max_query_words: bounds on query length.
        max_title_share: a title shared by more than this fraction of documents is not a query
            on its own (it would not identify the passage).
        min_passage_words: passage-derived strategies need a text of at least this many words.
        min_positive_words: a pair whose positive keeps fewer words after the copy filter removed
            the query is dropped.
        probe: ``{candidates, pairs, mrr_band, max_strategies, model, batch_size}`` for ``auto``.
        seed: random seed.

    After :meth:`generate`, ``stats`` holds pairs per strategy, the copy filter's counts and, for
    ``auto``, the probe's table. ``encoder`` is the base model the probe uses (the pipeline sets
    it to the run's; else ``probe.model`` is loaded).
    """

    def __init__(
        self,
        strategies: list[str] | tuple[str, ...] | str = ("title_body", "keyphrase", "span"),
        pairs_per_doc: int = 1,
        max_pairs: int | None = None,
        min_query_words: int = 2,
        max_query_words: int = 12,
        max_title_share: float = 0.01,
        min_passage_words: int = 20,
        min_positive_words: int = 3,
        probe: dict[str, Any] | None = None,
        seed: int = 0,
    ):
        from embedforge.errors import EmbedforgeError

        self.auto = strategies == AUTO or list(strategies) == [AUTO]
        self.probe_settings = dict(probe or {})
        wanted = (
            list(self.probe_settings.get("candidates") or STRATEGIES)
            if self.auto
            else [strategies]
            if isinstance(strategies, str)
            else list(strategies)
        )
        canonical = [ALIASES.get(s, s) for s in wanted]
        unknown = set(canonical) - set(STRATEGIES)
        if unknown:
            key = "generator.probe.candidates" if self.auto else "generator.strategies"
            raise EmbedforgeError(
                f"{key}: unknown {sorted(unknown)}; choose from {list(STRATEGIES)}"
                f" (old names {sorted(ALIASES)}) or {AUTO!r}"
            )
        self.strategies = list(dict.fromkeys(canonical))
        self.pairs_per_doc = int(pairs_per_doc)
        self.max_pairs = max_pairs
        self.min_query_words = int(min_query_words)
        self.max_query_words = int(max_query_words)
        self.max_title_share = float(max_title_share)
        self.min_passage_words = int(min_passage_words)
        self.min_positive_words = int(min_positive_words)
        self.seed = int(seed)
        self.encoder: Any = None
        self.stats: dict[str, Any] = {}

    def _keyphrase(self, words: list[str], idf: dict[str, float], rng: random.Random) -> str:
        tf = Counter(w.lower() for w in words if w.lower() not in STOPWORDS and len(w) > 2)
        if not tf:
            return ""
        ranked = sorted(tf, key=lambda w: (-tf[w] * idf.get(w, 0.0), w))
        k = rng.randint(3, max(3, min(6, self.max_query_words)))
        chosen = set(ranked[:k])
        seen, out = set(), []
        for w in words:  # keep reading order: reads like a query, not a bag
            lw = w.lower()
            if lw in chosen and lw not in seen:
                seen.add(lw)
                out.append(lw)
        return " ".join(out)

    def _title_terms(self, title: str, idf: dict[str, float], rng: random.Random) -> str:
        words = [w for w in _words(title) if w.lower() not in STOPWORDS and len(w) > 2]
        distinct = list(dict.fromkeys(w.lower() for w in words))
        if len(distinct) < 2:
            return ""
        k = rng.randint(2, min(4, len(distinct)))
        ranked = sorted(distinct, key=lambda w: (-idf.get(w, 0.0), w))
        chosen = set(ranked[:k])
        query = " ".join(w for w in distinct if w in chosen)  # reading order
        # a contiguous run of the title would be a copy of it; a bag in another order is a query
        return "" if copyable(query, title) else query

    def _span(self, text: str, rng: random.Random) -> tuple[str, str]:
        """A contiguous run of 4-10 tokens of ``text`` and the text with that run cut out."""
        tokens = text.split()
        if len(_words(text)) < self.min_query_words + 4:
            return "", ""
        n = rng.randint(max(self.min_query_words, 4), max(4, min(self.max_query_words, 10)))
        start = rng.randrange(0, max(1, len(tokens) - n))
        query = " ".join(tokens[start : start + n]).strip(" ,;:.()[]\"'")
        return query, " ".join(tokens[:start] + tokens[start + n :])

    def _heading(self, text: str, rng: random.Random) -> tuple[str, str]:
        found = []
        # cut span: the heading and its closing "." (the section number stays); markdown: "## ..."
        matches = [(m, m.start("h"), m.end()) for m in _NUMBERED.finditer(text)]
        matches += [(m, m.start(), m.end()) for m in _MARKDOWN.finditer(text)]
        for m, cut, cut_end in matches:
            h = m.group("h").strip()
            words = h.split()
            if (
                len(h) < 4
                or len(words) > self.max_query_words
                or all(len(w) == 1 for w in words)
                or h.lower() in STOPWORDS
                or words[-1].lower() in STOPWORDS | {"&", "/"}
            ):
                continue
            found.append((cut, cut_end, h))
        if not found:
            return "", ""
        start, end, h = rng.choice(found)
        rest = re.sub(r"\s+", " ", text[:start] + text[end:]).strip()
        return h, rest

    def _ict(self, text: str, rng: random.Random) -> tuple[str, str]:
        sents = [x for x in _SENT.split(text) if x.strip()]
        if len(sents) < 3:
            return "", ""
        i = rng.randrange(len(sents))
        return sents[i], " ".join(sents[:i] + sents[i + 1 :])

    def generate(self, chunks: list[Chunk]) -> list[Pair]:
        self.stats = {}
        if not chunks or not self.strategies:
            return []
        if self.auto:
            from embedforge.generate.probe import probe_strategies

            chosen, table = probe_strategies(self, chunks)
            self.stats["probe"] = {"table": table, "chosen": chosen, **self._probe_config()}
            pairs = self._generate(chunks, chosen)
            self.stats = {**self._stats, "probe": self.stats["probe"]}
            return pairs
        pairs = self._generate(chunks, self.strategies)
        self.stats = self._stats
        return pairs

    def _probe_config(self) -> dict[str, Any]:
        from embedforge.generate.probe import probe_config

        return probe_config(self.probe_settings)

    def _generate(self, chunks: list[Chunk], strategies: list[str]) -> list[Pair]:
        """Pairs from ``strategies`` (canonical names); sets ``self._stats``."""
        counts = Counter({"copyable_repaired": 0, "copyable_dropped": 0})
        docs = [(c, _words(c.get("text", ""))) for c in chunks]
        corpus = _CorpusStats.of(docs, self.max_title_share)
        pairs: list[Pair] = []
        for c, words in docs:
            rng = random.Random(f"{self.seed}:{c.get('id')}")  # per-document: stable under edits
            options = self._options(c, words, strategies, corpus, rng)
            kept = [k for k in (self._checked(*o, counts) for o in options) if k]
            rng.shuffle(kept)
            for s, q, pos in kept[: self.pairs_per_doc]:
                pairs.append(
                    {
                        "query": q,
                        "positive": pos,
                        "source": "offline",
                        "strategy": s,
                        "doc_id": c.get("id"),
                    }
                )
        if self.max_pairs and len(pairs) > self.max_pairs:
            pairs = random.Random(self.seed).sample(pairs, int(self.max_pairs))
        by_strategy = Counter(p["strategy"] for p in pairs)
        self._stats = {
            "generator": "offline",
            "strategies": list(strategies),
            "chunks": len(chunks),
            "pairs": len(pairs),
            "by_strategy": dict(sorted(by_strategy.items())),
            **counts,
        }
        return pairs

    def _options(
        self,
        c: Chunk,
        words: list[str],
        strategies: list[str],
        corpus: _CorpusStats,
        rng: random.Random,
    ) -> list[tuple[str, str, str]]:
        """Each applicable strategy's (strategy, query, positive) for one chunk, before checks."""
        title = (c.get("title") or "").strip()
        text = (c.get("text") or "").strip()
        informative = bool(title) and corpus.title_count[title.lower()] <= corpus.max_share
        passage = len(words) >= self.min_passage_words
        positive = doc_text(c)
        options: list[tuple[str, str, str]] = []
        for s in strategies:
            if s in _PASSAGE and not passage:
                continue
            if s == "title_body" and informative and text:
                options.append((s, title, text))
            elif s == "title_terms" and informative:
                options.append((s, self._title_terms(title, corpus.title_idf, rng), positive))
            elif s == "keyphrase":
                options.append((s, self._keyphrase(words, corpus.idf, rng), positive))
            elif s == "title_keyphrase" and title:
                query = f"{title}; {self._keyphrase(words, corpus.idf, rng)}"
                options.append((s, query, positive))
            elif s in ("span", "ict", "heading_section") or (s == "title_heading" and title):
                fn = {"span": self._span, "ict": self._ict}.get(s, self._heading)
                query, rest = fn(text, rng)
                if s == "title_heading" and query:
                    query = f"{title}; {query}"
                options.append((s, query, f"{title} {rest}".strip() if title else rest))
        return options

    def _checked(self, s: str, q: str, pos: str, counts: Counter) -> tuple[str, str, str] | None:
        """The pair if its query has a usable length and is not solved by copying it from the
        positive (the occurrence is cut out when enough of the positive is left); else None."""
        if not q or not pos:
            return None
        # a heading is a query of its own ("Assignment"): one word is enough
        least = 1 if s.endswith("heading") or s == "heading_section" else self.min_query_words
        if not least <= len(q.split()) <= self.max_query_words + 20:
            return None
        if copyable(q, pos):  # the one rule: no query is solved by copying it
            pos = remove_query(q, pos)
            if copyable(q, pos) or len(pos.split()) < self.min_positive_words:
                counts["copyable_dropped"] += 1
                return None
            counts["copyable_repaired"] += 1
        return s, q, pos
