"""Offline (no LLM, no labels) training pairs from the corpus alone.

Naive inverse-cloze pairs (a sentence as the query, the rest of the passage as the positive)
*lower* a strong base model's NDCG (see docs/offline-pairs.md), so the strategies here imitate what
users type instead:

- ``title``: the document's title or heading -> the passage (where titles are informative, i.e.
  shared by few passages);
- ``keyphrase``: 3-6 salient words of the passage (highest tf-idf in the corpus, in reading order),
  a short keyword search query;
- ``title_keyphrase``: title + keyphrases (what a user searching inside one named document types);
- ``span``: a short contiguous span (a clause fragment) left *inside* the passage;
- ``heading``: a section heading found inside the passage ("12. Governing Law.", "Section 3.2
  Term.", "## Returns") -> the passage with the heading *removed*, so the model must learn what a
  section about that topic says (the (section title, section text) pairs of E5/GTE pre-training);
  headings name clause/topic types, which is what users ask about ("which law governs?");
- ``title_heading``: title; heading -> the passage without the heading: scoped to one document, so
  another document's section with the same heading is a true negative (a bare "Termination" query
  has true answers in every contract);
- ``ict``: classic inverse cloze (a sentence as the query, removed from its passage), kept for
  comparison: it is the variant that hurts.

Every pair is a deterministic function of (corpus, config, seed).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

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
STRATEGIES = ("title", "keyphrase", "title_keyphrase", "span", "heading", "title_heading", "ict")
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


class OfflineGenerator:
    """Self-supervised pairs from chunks, seeded and reproducible.

    Args:
        strategies: any of ``title``, ``keyphrase``, ``title_keyphrase``, ``span``, ``heading``,
            ``title_heading``, ``ict``; each document gets ``pairs_per_doc`` pairs from strategies
            that apply to it, chosen with the seed.
        pairs_per_doc: pairs per document.
        max_pairs: cap on the total (seeded sample).
        min_query_words / max_query_words: bounds on query length.
        max_title_share: a title shared by more than this fraction of documents is not a query
            on its own (it would not identify the passage).
        seed: random seed.
    """

    def __init__(
        self,
        strategies: list[str] | tuple[str, ...] = ("title", "keyphrase", "span"),
        pairs_per_doc: int = 1,
        max_pairs: int | None = None,
        min_query_words: int = 2,
        max_query_words: int = 12,
        max_title_share: float = 0.01,
        seed: int = 0,
    ):
        unknown = set(strategies) - set(STRATEGIES)
        if unknown:
            from embedforge.errors import EmbedforgeError

            raise EmbedforgeError(
                f"generator.strategies: unknown {sorted(unknown)}; choose from {list(STRATEGIES)}"
            )
        self.strategies = list(strategies)
        self.pairs_per_doc = int(pairs_per_doc)
        self.max_pairs = max_pairs
        self.min_query_words = int(min_query_words)
        self.max_query_words = int(max_query_words)
        self.max_title_share = float(max_title_share)
        self.seed = int(seed)

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

    def _span(self, words: list[str], rng: random.Random) -> str:
        if len(words) < self.min_query_words + 4:
            return ""
        n = rng.randint(max(self.min_query_words, 4), max(4, min(self.max_query_words, 10)))
        start = rng.randrange(0, max(1, len(words) - n))
        return " ".join(words[start : start + n])

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
        if not chunks or not self.strategies:
            return []
        docs = [(c, _words(c.get("text", ""))) for c in chunks]
        df = Counter(w for _, ws in docs for w in {x.lower() for x in ws})
        n = len(docs)
        idf = {w: math.log((n + 1) / (c + 0.5)) for w, c in df.items()}
        title_count = Counter((c.get("title") or "").strip().lower() for c, _ in docs)
        max_share = max(1, int(self.max_title_share * n))
        pairs: list[Pair] = []
        for c, words in docs:
            rng = random.Random(
                f"{self.seed}:{c.get('id')}"
            )  # per-document: stable under corpus edits
            title = (c.get("title") or "").strip()
            informative = bool(title) and title_count[title.lower()] <= max_share
            positive = doc_text(c)
            options = []
            for s in self.strategies:
                if s == "title" and informative:
                    options.append((s, title))
                elif s == "keyphrase":
                    options.append((s, self._keyphrase(words, idf, rng)))
                elif s == "title_keyphrase" and title:
                    options.append((s, f"{title}; {self._keyphrase(words, idf, rng)}"))
                elif s == "span":
                    options.append((s, self._span(words, rng)))
                elif s in ("ict", "heading") or (s == "title_heading" and title):
                    fn = self._ict if s == "ict" else self._heading
                    query, rest = fn(c.get("text", ""), rng)
                    if s == "title_heading" and query:
                        query = f"{title}; {query}"
                    options.append((s, query, f"{title} {rest}".strip() if title else rest))
            options = [
                o if len(o) == 3 else (*o, positive) for o in options
            ]  # (strategy, query, positive)
            options = [
                o
                for o in options
                if o[1]
                # a heading is a query of its own ("Assignment"): one word is enough
                and (1 if o[0].endswith("heading") else self.min_query_words)
                <= len(o[1].split())
                <= self.max_query_words + 20
            ]
            rng.shuffle(options)
            for s, q, pos in options[: self.pairs_per_doc]:
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
        return pairs
