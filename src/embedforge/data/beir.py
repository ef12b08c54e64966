"""BEIR-layout datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.io import decode_line, iter_numbered_jsonl
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
    with path.open("rb") as f:
        text = (decode_line(raw, path, lineno) for lineno, raw in enumerate(f, 1))
        for lineno, row in enumerate(csv.reader(text, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and not _is_number(row[-1]):
                continue  # header
            if len(row) < 3:
                raise EmbedforgeError(
                    f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score)"
                )
            qid, did, score = row[0].strip(), row[1].strip(), row[-1].strip()
            try:
                rel = float(score)
            except ValueError:
                raise EmbedforgeError(f"{path}:{lineno}: score {score!r} is not a number") from None
            if not math.isfinite(rel):
                raise EmbedforgeError(f"{path}:{lineno}: score {score!r} is not a finite number")
            if qid not in queries:
                raise EmbedforgeError(f"{path}:{lineno}: query id {qid!r} is not in queries.jsonl")
            if did not in corpus:
                raise EmbedforgeError(f"{path}:{lineno}: corpus id {did!r} is not in corpus.jsonl")
            qrels.setdefault(qid, {})[did] = int(rel)
    return qrels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _records(path: Path, fields: tuple[str, ...]) -> dict[str, dict]:
    """``_id`` -> record of a BEIR JSONL file: each of ``fields`` a string (``text`` required),
    ids unique; a bad record is an error naming the file and line."""
    out: dict[str, dict] = {}
    first: dict[str, int] = {}
    for lineno, row in iter_numbered_jsonl(path):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise EmbedforgeError(f"{path}:{lineno}: a record needs '_id' and a string 'text'")
        for name in fields:
            if not isinstance(row.get(name) or "", str):
                raise EmbedforgeError(
                    f"{path}:{lineno}: {name!r} must be a string, got {type(row[name]).__name__}"
                )
        rid = str(row["_id"])
        if rid in first:
            raise EmbedforgeError(
                f"{path}:{lineno}: duplicate _id {rid!r} (first on line {first[rid]})"
            )
        first[rid] = lineno
        out[rid] = {name: row.get(name) or "" for name in fields}
    return out


def load_beir(path: str | Path, splits: list[str] | None = None) -> BeirDataset:
    """Load a BEIR directory; every problem is a one-line error naming the file (and line).

    The files are UTF-8 (a BOM is accepted); ``_id`` s are unique per file and ``title`` / ``text``
    are strings, or the load fails at the first offending line.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EmbedforgeError(f"dataset directory not found: {root}")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise EmbedforgeError(f"{root} is not a BEIR dataset: {name} is missing")
    corpus = _records(root / "corpus.jsonl", ("title", "text"))
    if not corpus:
        raise EmbedforgeError(f"{root / 'corpus.jsonl'} is empty: no documents to search")
    queries = {qid: r["text"] for qid, r in _records(root / "queries.jsonl", ("text",)).items()}
    qrels_dir = root / "qrels"
    available = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    wanted = available if splits is None else [s for s in splits if s in available]
    qrels = {s: read_qrels(qrels_dir / f"{s}.tsv", corpus, queries) for s in wanted}
    return BeirDataset(path=root, corpus=corpus, queries=queries, qrels=qrels)
