"""BEIR-layout datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.io import iter_jsonl
from embedforge.types import doc_text

__all__ = ["BeirDataset", "doc_text", "load_beir", "read_qrels"]


@dataclass
class BeirDataset:
    """A loaded BEIR dataset. ``corpus`` maps id -> {"title", "text"}; ``qrels`` split -> qid -> {did: rel}."""

    path: Path
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels)

    def texts(self) -> dict[str, str]:
        return {i: doc_text(r) for i, r in self.corpus.items()}


def read_qrels(path: Path, corpus: dict, queries: dict) -> dict[str, dict[str, int]]:
    """Read a qrels TSV (header ``query-id corpus-id score``); unknown ids are an error."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(reader, 1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and not row[-1].strip().lstrip("-").isdigit():
                continue  # header
            if len(row) < 3:
                raise EmbedforgeError(
                    f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score)"
                )
            qid, did, score = row[0].strip(), row[1].strip(), row[-1].strip()
            try:
                rel = int(float(score))
            except ValueError:
                raise EmbedforgeError(f"{path}:{lineno}: score {score!r} is not a number") from None
            if qid not in queries:
                raise EmbedforgeError(f"{path}:{lineno}: query id {qid!r} is not in queries.jsonl")
            if did not in corpus:
                raise EmbedforgeError(f"{path}:{lineno}: corpus id {did!r} is not in corpus.jsonl")
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def load_beir(path: str | Path, splits: list[str] | None = None) -> BeirDataset:
    """Load a BEIR directory; every problem is a one-line error naming the file (and line)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EmbedforgeError(f"dataset directory not found: {root}")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise EmbedforgeError(f"{root} is not a BEIR dataset: {name} is missing")
    corpus: dict[str, dict[str, str]] = {}
    for lineno, row in enumerate(iter_jsonl(root / "corpus.jsonl"), 1):
        if "_id" not in row or not isinstance(row.get("text", ""), str):
            raise EmbedforgeError(
                f"{root / 'corpus.jsonl'}: record {lineno} needs '_id' and a string 'text'"
            )
        corpus[str(row["_id"])] = {"title": row.get("title") or "", "text": row.get("text") or ""}
    if not corpus:
        raise EmbedforgeError(f"{root / 'corpus.jsonl'} is empty: no documents to search")
    queries: dict[str, str] = {}
    for lineno, row in enumerate(iter_jsonl(root / "queries.jsonl"), 1):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise EmbedforgeError(
                f"{root / 'queries.jsonl'}: record {lineno} needs '_id' and a string 'text'"
            )
        queries[str(row["_id"])] = row["text"]
    qrels_dir = root / "qrels"
    available = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    wanted = available if splits is None else [s for s in splits if s in available]
    qrels = {s: read_qrels(qrels_dir / f"{s}.tsv", corpus, queries) for s in wanted}
    return BeirDataset(path=root, corpus=corpus, queries=queries, qrels=qrels)
