"""Prompt building for LLM query generation: style, few-shot examples from real queries, domain hint.

Synthetic queries drift towards document-like phrasing (long, copied terminology), which teaches a
model little about what users type. The ``search`` and ``non_expert`` styles push against that, and
few-shot examples from the user's own real queries anchor length and tone.
"""

from __future__ import annotations

import random
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.generate.base import Chunk
from embedforge.io import iter_jsonl, require_file

PROMPT_VERSION = 1  # bump when the template changes: it is part of every cache key
STYLES = {
    "search": (
        "short keyword-style search queries (2-8 words), the way someone types into a search box:"
        " no full sentences, no question marks needed"
    ),
    "non_expert": (
        "questions a layperson would ask in plain everyday words, without the passage's technical"
        " or legal terms, about something this passage answers"
    ),
}


def load_few_shot(path: str | Path) -> list[str]:
    """Real queries from a file: JSONL rows with ``query`` or ``text`` (BEIR queries.jsonl works), or
    plain text with one query per line."""
    p = require_file(path, "generator.few_shot_path")
    if p.suffix == ".jsonl":
        out = []
        for row in iter_jsonl(p):
            q = row.get("query", row.get("text"))
            if isinstance(q, str) and q.strip():
                out.append(" ".join(q.split()))
        return out
    return [
        " ".join(line.split())
        for line in p.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


class PromptBuilder:
    """Renders the generation prompt for one chunk.

    Args:
        queries_per_chunk: how many queries to ask for.
        style: ``search`` or ``non_expert`` (see :data:`STYLES`).
        few_shot: real example queries; ``few_shot_k`` of them (seeded sample) go into the prompt.
        few_shot_k: examples shown.
        domain: optional domain hint, e.g. "commercial contracts".
        max_words: the longest query asked for (parsing drops longer ones).
        max_chunk_chars: passages are cut to this many characters.
        seed: sampling seed for the examples.
    """

    def __init__(
        self,
        queries_per_chunk: int = 3,
        style: str = "search",
        few_shot: list[str] | None = None,
        few_shot_k: int = 5,
        domain: str | None = None,
        max_words: int = 24,
        max_chunk_chars: int = 6000,
        seed: int = 0,
    ):
        if style not in STYLES:
            raise EmbedforgeError(f"generator.style must be one of {sorted(STYLES)}, got {style!r}")
        if int(queries_per_chunk) < 1:
            raise EmbedforgeError(
                f"generator.queries_per_chunk must be >= 1, got {queries_per_chunk!r}"
            )
        self.queries_per_chunk = int(queries_per_chunk)
        self.style = style
        pool = sorted({q for q in (few_shot or []) if q})
        k = min(int(few_shot_k), len(pool))
        self.examples = random.Random(seed).sample(pool, k) if k else []
        self.domain = domain
        self.max_words = int(max_words)
        self.max_chunk_chars = int(max_chunk_chars)

    def build(self, chunk: Chunk) -> str:
        n = self.queries_per_chunk
        domain = f" in the domain of {self.domain}" if self.domain else ""
        lines = [
            f"You write realistic user queries for training a search engine{domain}.",
            f"Read the passage and write {n} distinct {STYLES[self.style]}.",
            "Each query must be answered by this passage, stand on its own without the passage,"
            f" use at most {self.max_words} words, and not copy sentences from the passage.",
        ]
        if self.examples:
            lines.append("Real queries from our users, to match in length and tone:")
            lines.extend(f"- {q}" for q in self.examples)
        lines.append(f"Return only a JSON array of {n} strings.")
        text = str(chunk.get("text", ""))[: self.max_chunk_chars]
        title = str(chunk.get("title") or "").strip()
        passage = f"Title: {title}\n{text}" if title else text
        return "\n".join(lines) + f"\n\n<passage>\n{passage}\n</passage>"
