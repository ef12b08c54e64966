"""Ingestion: a folder (or file) of documents -> deduplicated, token-aware chunks.

``ingest(path, tokenizer)`` extracts text (:mod:`embedforge.data.extract_text`), packs paragraphs
into windows of at most ``chunk_tokens`` tokens of the model's tokenizer (no special tokens) with
``overlap_tokens`` of overlap, removes exact and near duplicates, and returns ``(chunks, report)``.
With ``out_dir`` it writes ``chunks.jsonl`` and ``ingest_report.json`` atomically, keyed by a hash
of (file content hashes, chunking config, tokenizer), so a rerun on unchanged inputs only reads
the cached files.

Chunking: a chunk never crosses a heading (section) change unless the section so far is shorter
than ``min_tokens``; paragraphs are packed whole, over-long ones are split at sentence ends, then
at word boundaries. When a window fills up it ends at the last paragraph boundary that keeps it at
least half full, else at a sentence. The next window starts with the trailing units of the
previous one that fit in ``overlap_tokens`` (none when a single unit is larger).

Near duplicates: chunks whose word 5-shingle sets have Jaccard similarity >= ``near_dup_threshold``
(default 0.9) with an earlier chunk are dropped. Candidates come from MinHash LSH (128 hashes, 16
bands of 8 rows: a pair at Jaccard 0.9 is a candidate with probability > 0.999) and are confirmed
with the exact Jaccard, so no pair below the threshold is removed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.data.extract_text import READERS, Document, Unusable, extract
from embedforge.errors import EmbedforgeError, printable
from embedforge.io import file_hash, read_jsonl, stable_hash, write_json, write_jsonl
from embedforge.progress import track

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunking:
    """The chunking defaults: :func:`ingest`, ``FolderSource`` and ``conf/data/folder.yaml`` use
    these values (a test keeps the YAML equal to them)."""

    chunk_tokens: int = 384
    overlap_tokens: int = 64
    min_tokens: int = 16
    near_dup_threshold: float = 0.9
    csv_text_column: str = "text"
    max_file_mb: float = 100.0


DEFAULTS = Chunking()
INGEST_VERSION = 2  # bump when chunking or extraction changes output, to invalidate caches
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_WORD = re.compile(r"\S+")


@dataclass
class _Unit:
    """A span of a document's text that is never split further: a paragraph, sentence or words."""

    start: int
    end: int
    n: int  # tokens
    para: int
    section: int
    title: str
    page: int | None


# ---------------------------------------------------------------------------- tokens
def tokenizer_name(tokenizer: Any) -> str:
    """A stable label for the cache key: class, name/path and vocabulary size."""
    name = getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__}:{name}:{len(tokenizer)}"


def _count(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return [len(x) for x in ids]


class _SpanCounter:
    """Token counts of spans of one text.

    With a fast tokenizer the text is tokenized once and a span's count is the number of tokens
    that start inside it (exact for WordPiece at whitespace boundaries, close for BPE; every chunk
    is verified afterwards). Otherwise every span is tokenized.
    """

    def __init__(self, tokenizer: Any, text: str, offsets: list[tuple[int, int]] | None = None):
        self.tokenizer, self.text = tokenizer, text
        self.starts = None if offsets is None else np.array([o[0] for o in offsets], dtype=np.int64)

    def __call__(self, spans: list[tuple[int, int]]) -> list[int]:
        if self.starts is None:
            return _count(self.tokenizer, [self.text[a:b] for a, b in spans])
        if not spans:
            return []
        x = np.asarray(spans, dtype=np.int64)
        return (
            np.searchsorted(self.starts, x[:, 1]) - np.searchsorted(self.starts, x[:, 0])
        ).tolist()


def span_counters(tokenizer: Any, docs: list[Document]) -> list[_SpanCounter]:
    """One counter per document; a fast tokenizer encodes all documents in one batch."""
    if not getattr(tokenizer, "is_fast", False):
        return [_SpanCounter(tokenizer, d.text) for d in docs]
    enc = tokenizer(
        [d.text for d in docs], add_special_tokens=False, truncation=False, verbose=False,
        return_offsets_mapping=True,
    )  # fmt: skip
    return [_SpanCounter(tokenizer, d.text, offs) for d, offs in zip(docs, enc["offset_mapping"])]


def _norm(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------- chunking
def _split_words(
    text: str, s: int, e: int, count: _SpanCounter, limit: int
) -> list[tuple[int, int, int]]:
    """Greedy windows of whole words with <= ``limit`` tokens; a single huge word is cut by chars."""
    words = [(m.start() + s, m.end() + s) for m in _WORD.finditer(text[s:e])]
    pieces: list[tuple[int, int, int]] = []
    for (a, b), n in zip(words, count(words)):
        if n > limit:  # e.g. a base64 blob: cut into pieces of ~limit/4 characters
            step = max(1, limit // 4)
            cuts = [(x, min(b, x + step)) for x in range(a, b, step)]
            pieces.extend((x, y, k) for (x, y), k in zip(cuts, count(cuts)))
        else:
            pieces.append((a, b, n))
    out, cur_s, cur_e, cur_n = [], None, 0, 0
    for a, b, n in pieces:
        if cur_s is not None and cur_n + n > limit:
            out.append((cur_s, cur_e, cur_n))
            cur_s = None
        if cur_s is None:
            cur_s, cur_n = a, 0
        cur_e, cur_n = b, cur_n + n
    if cur_s is not None:
        out.append((cur_s, cur_e, cur_n))
    return out


def _units(doc: Document, count: _SpanCounter, limit: int) -> list[_Unit]:
    """Paragraphs of <= ``limit`` tokens; longer ones as sentences, then word windows."""
    counts = count([(b.start, b.end) for b in doc.blocks])
    units: list[_Unit] = []
    section, prev_title = 0, None
    for para, (block, n) in enumerate(zip(doc.blocks, counts)):
        if prev_title is not None and block.title != prev_title:
            section += 1
        prev_title = block.title
        title = block.title or doc.title

        def add(a: int, b: int, k: int, para=para, section=section, title=title, block=block):
            units.append(_Unit(a, b, k, para, section, title, block.page))

        if n <= limit:
            add(block.start, block.end, n)
            continue
        sents, pos = [], block.start
        for m in _SENTENCE_END.finditer(doc.text, block.start, block.end):
            sents.append((pos, m.start()))
            pos = m.end()
        sents.append((pos, block.end))
        sents = [(a, b) for a, b in sents if doc.text[a:b].strip()]
        for (a, b), k in zip(sents, count(sents)):
            if k <= limit:
                add(a, b, k)
            else:
                for x, y, j in _split_words(doc.text, a, b, count, limit):
                    add(x, y, j)
    return units


def _chunk_text(doc: Document, units: list[_Unit]) -> str:
    parts: list[str] = []
    for i, u in enumerate(units):
        if i:
            parts.append(" " if u.para == units[i - 1].para else "\n\n")
        parts.append(_norm(doc.text[u.start : u.end]))
    return "".join(parts)


def _sections(units: list[_Unit], min_tokens: int) -> list[list[_Unit]]:
    """Group units by heading; a section shorter than ``min_tokens`` joins the next one."""
    groups: list[list[_Unit]] = []
    for u in units:
        if groups and groups[-1][-1].section == u.section:
            groups[-1].append(u)
        else:
            groups.append([u])
    merged: list[list[_Unit]] = []
    carry: list[_Unit] = []
    for g in groups:
        g = carry + g
        if sum(u.n for u in g) < min_tokens:
            carry = g
        else:
            merged.append(g)
            carry = []
    if carry:
        if merged:
            merged[-1].extend(carry)
        else:
            merged.append(carry)
    return merged


def chunk_documents(
    docs: list[Document],
    tokenizer: Any,
    chunk_tokens: int,
    overlap_tokens: int,
    min_tokens: int = 0,
) -> list[list[tuple[str, list[_Unit], int]]]:
    """Windows of each document as (text, units, n_tokens) with n_tokens <= ``chunk_tokens``.

    Windows are packed with span counts, then all windows are tokenized in one batch to verify
    them; a document whose tokenizer counts are not additive (a window overflows) is packed again
    with every window tokenized while it is built.
    """
    plans = []
    for doc, count in zip(docs, span_counters(tokenizer, docs)):
        sections = _sections(_units(doc, count, chunk_tokens), min_tokens)
        windows = [w for units in sections for w in _pack(units, chunk_tokens, overlap_tokens)]
        plans.append((doc, sections, windows, [_chunk_text(doc, w) for w in windows]))
    actual = iter(_count(tokenizer, [t for *_, texts in plans for t in texts]))
    out = []
    for doc, sections, windows, texts in plans:
        counts = [next(actual) for _ in texts]
        if all(n <= chunk_tokens for n in counts):
            out.append(list(zip(texts, windows, counts)))
            continue
        redo = []
        for units in sections:
            for w in _pack(units, chunk_tokens, overlap_tokens, exact=(tokenizer, doc)):
                text = _chunk_text(doc, w)
                redo.append((text, w, _count(tokenizer, [text])[0]))
        out.append(redo)
    return out


def _pack(
    units: list[_Unit], chunk_tokens: int, overlap_tokens: int, exact=None
) -> list[list[_Unit]]:
    """Greedy windows over one section's units (see the module docstring for the rules)."""
    out = []
    start, first_new = 0, 0
    while start < len(units):
        end, n = start, 0
        while end < len(units) and (end == start or n + units[end].n <= chunk_tokens):
            n += units[end].n
            end += 1
        if end < len(units):  # window is full: prefer to end it at a paragraph boundary
            half, acc = chunk_tokens / 2, 0
            best = None
            for j in range(start + 1, end):
                acc += units[j - 1].n
                if j > first_new and units[j].para != units[j - 1].para and acc >= half:
                    best = j
            end = best or end
        if exact is not None:  # slow path: shrink until the real token count fits
            tokenizer, doc = exact
            while end - start > 1 and end - 1 > first_new:
                if _count(tokenizer, [_chunk_text(doc, units[start:end])])[0] <= chunk_tokens:
                    break
                end -= 1
        out.append(units[start:end])
        if end >= len(units):
            break
        nxt, carried = end, 0
        while nxt - 1 > start and carried + units[nxt - 1].n <= overlap_tokens:
            nxt -= 1
            carried += units[nxt].n
        start, first_new = nxt, end
    return out


# ---------------------------------------------------------------------------- dedup
_MIX = np.random.default_rng(7).integers(1, 1 << 62, 8, dtype=np.uint64) | np.uint64(1)
_WORDS = re.compile(r"\w+")


def _shingles(text: str, vocab: dict[str, int], k: int = 5) -> np.ndarray:
    """Sorted unique 64-bit hashes of the lower-cased word ``k``-shingles of ``text``.

    Words are numbered through ``vocab`` (shared by all texts of one call), so equal shingles
    hash equally; collisions of the 64-bit polynomial hash are negligible.
    """
    words = _WORDS.findall(text.lower())
    ids = [vocab.setdefault(x, len(vocab) + 1) for x in words]
    w = np.asarray(ids, dtype=np.uint64) * _MIX[k]
    if len(w) <= k:
        return np.array([int((w * _MIX[: len(w)]).sum()) & ((1 << 64) - 1)], dtype=np.uint64)
    n = len(w) - k + 1
    h = np.zeros(n, dtype=np.uint64)
    for j in range(k):  # uint64 arithmetic wraps: a polynomial hash of the k words
        h += w[j : j + n] * _MIX[j]
    return np.unique(h)


def near_duplicates(
    texts: list[str], threshold: float = 0.9, num_perm: int = 128, bands: int = 16
) -> dict[int, int]:
    """Map index -> earlier kept index it near-duplicates (shingle Jaccard >= ``threshold``)."""
    if len(texts) < 2:
        return {}
    rng = np.random.default_rng(1)
    a = rng.integers(1, 1 << 63, num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
    b = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64)
    rows = num_perm // bands
    buckets: dict[tuple, list[int]] = defaultdict(list)
    shingles: list[np.ndarray] = []
    vocab: dict[str, int] = {}
    dup: dict[int, int] = {}
    for i, text in enumerate(texts):
        sh = _shingles(text, vocab)
        shingles.append(sh)
        sig = ((sh[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).min(axis=0)  # (num_perm,)
        keys = [(band, sig[band * rows : (band + 1) * rows].tobytes()) for band in range(bands)]
        candidates = sorted({j for key in keys for j in buckets.get(key, ())})
        for j in candidates:  # confirm with the exact Jaccard of the shingle sets
            inter = len(np.intersect1d(sh, shingles[j], assume_unique=True))
            if inter / (len(sh) + len(shingles[j]) - inter) >= threshold:
                dup[i] = j
                break
        if i not in dup:  # only kept chunks index themselves: a duplicate maps to a kept chunk
            for key in keys:
                buckets[key].append(i)
    return dup


# ---------------------------------------------------------------------------- driver
def list_files(root: Path, exclude: Path | None = None) -> tuple[list[Path], list[dict]]:
    """Files under ``root`` in sorted order, and the entries skipped (never read) with a reason.

    Hidden files and folders and ``exclude`` are left out silently. Skipped and reported: links
    resolving outside ``root`` (``outside_root``), links that loop or dangle (``broken_link``),
    links to folders (``folder_link``: not followed; the folder is read where it lies), names
    that are not valid UTF-8 (``bad_name``, shown with the bytes escaped), FIFOs, sockets and
    devices (``not_a_file``) and folders that cannot be listed (``unreadable``).
    """
    if root.is_file():
        return [root], []
    files: list[Path] = []
    skipped: list[dict] = []

    def visit(folder: Path) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append(
                _skip(root, folder, "unreadable", f"cannot list the folder: {e.strerror}")
            )
            return
        for entry in entries:
            p = Path(entry.path)
            if entry.name.startswith(".") or (
                exclude is not None and (p == exclude or exclude in p.parents)
            ):
                continue
            problem = _entry_problem(root, p)
            if problem is not None:
                skipped.append(_skip(root, p, *problem))
            elif entry.is_dir(follow_symlinks=False):
                visit(p)
            else:
                files.append(p)

    visit(root)
    return files, skipped


_NOT_A_FILE = [(stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket")]


def _entry_problem(root: Path, p: Path) -> tuple[str, str] | None:
    """``(reason, detail)`` when the folder entry ``p`` is not a file or folder to read, else None."""
    try:
        p.relative_to(root).as_posix().encode("utf-8")
    except UnicodeEncodeError:
        return "bad_name", "file name is not valid UTF-8"
    try:
        target = p.resolve(strict=True)
        mode = target.stat().st_mode
    except RuntimeError:  # Python < 3.13 reports a symlink loop so
        return "broken_link", "symlink loop"
    except OSError as e:
        why = "symlink loop" if e.errno == errno.ELOOP else f"link target missing ({e.strerror})"
        return "broken_link", why
    if target != root and root not in target.parents:
        return "outside_root", "link to a path outside the ingested folder"
    if p.is_symlink() and stat.S_ISDIR(mode):
        return "folder_link", f"links to folders are not followed ({target.relative_to(root)})"
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        kind = next((k for test, k in _NOT_A_FILE if test(mode)), "device or special file")
        return "not_a_file", kind
    return None


def _skip(root: Path, p: Path, reason: str, detail: str) -> dict:
    rel = p.relative_to(root).as_posix()
    return {
        "path": printable(rel) if reason == "bad_name" else rel,
        "reason": reason,
        "detail": detail,
    }


@dataclass
class _Tally:
    """What reading the files found: chunks before dedup, skipped files and records, counts."""

    raw: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    records_skipped: list[dict] = field(default_factory=list)
    by_type: Counter = field(default_factory=Counter)
    by_hash: dict[str, str] = field(default_factory=dict)  # content hash -> first file read
    documents: int = 0
    files_read: int = 0
    short: int = 0


def ingest(
    path: str | Path,
    tokenizer: Any,
    chunk_tokens: int = DEFAULTS.chunk_tokens,
    overlap_tokens: int = DEFAULTS.overlap_tokens,
    min_tokens: int = DEFAULTS.min_tokens,
    out_dir: str | Path | None = None,
    near_dup_threshold: float = DEFAULTS.near_dup_threshold,
    csv_text_column: str = DEFAULTS.csv_text_column,
    force: bool = False,
    max_file_mb: float = DEFAULTS.max_file_mb,
) -> tuple[list[dict], dict]:
    """Extract, chunk and deduplicate a folder (recursive) or a single file.

    Args:
        path: folder or file (.txt .md .html .htm .pdf .docx .jsonl .csv). What cannot be read
            (links outside the folder, loops, FIFOs, bad names, ...) is skipped and reported
            (:func:`list_files`).
        tokenizer: the model's Hugging Face tokenizer; budgets count its tokens without specials.
        chunk_tokens: maximum tokens per chunk (keep it <= the model's max_seq_length - 2).
        overlap_tokens: at most this many tokens of the previous chunk start the next one.
        min_tokens: chunks shorter than this are dropped (counted in the report).
        out_dir: if set, write ``chunks.jsonl`` + ``ingest_report.json`` there (and reuse them when
            the inputs, config and tokenizer are unchanged; a damaged cache is rebuilt).
        near_dup_threshold: word 5-shingle Jaccard at or above which a chunk is a near duplicate
            of an earlier one; >= 1.0 disables near-duplicate removal.
        csv_text_column: the column of a CSV file that holds the text.
        force: recompute even when the cache matches.
        max_file_mb: larger files are skipped (``too_large``).

    Returns:
        (chunks, report): chunks are ``{"id", "text", "title", "source", "start", "end",
        "n_tokens", "page"?, "page_end"?, "record"?, "doc_id"?}``; ``start``/``end`` are char offsets
        into the file's extracted text (the decoded file for .txt/.md, the record's text for
        .jsonl/.csv). The report counts files read/skipped by reason, chunks and duplicates.
    """
    t0 = time.perf_counter()
    root = Path(path).expanduser().resolve()
    _check_args(root, chunk_tokens, overlap_tokens, min_tokens)
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else None
    base = root if root.is_dir() else root.parent
    files, unlisted = list_files(root, exclude=out)
    max_bytes = int(max_file_mb * 2**20)
    hashes = {f: _hash_or_reason(f, max_bytes) for f in files}
    config = dict(
        chunk_tokens=int(chunk_tokens), overlap_tokens=int(overlap_tokens),
        min_tokens=int(min_tokens), near_dup_threshold=float(near_dup_threshold),
        csv_text_column=csv_text_column, max_file_mb=float(max_file_mb),
    )  # fmt: skip
    tok_name = tokenizer_name(tokenizer)
    listing = sorted((f.relative_to(base).as_posix(), h) for f, h in hashes.items())
    key = stable_hash(INGEST_VERSION, listing, config, tok_name)
    rebuilt = None
    if out is not None and not force:
        cached, rebuilt = _load_cache(out, key)
        if cached is not None:
            cached[1]["seconds"] = round(time.perf_counter() - t0, 2)
            return cached
    tally = _Tally(skipped=list(unlisted))
    for f in track(files, "ingest", "file"):
        _read_file(f, f.relative_to(base).as_posix(), hashes, tally, config, tokenizer)
    chunks, near, unique = _dedup(tally.raw, near_dup_threshold)
    if not chunks:
        reasons = Counter(s["reason"] for s in tally.skipped)
        raise EmbedforgeError(
            f"no chunks from {root}: {len(files)} files, {tally.files_read} read, skipped"
            f" {dict(reasons) or 'none'}"
            + (
                f" ({tally.short} chunks shorter than min_tokens={min_tokens})"
                if tally.short
                else ""
            )
        )
    report = _report(root, len(files) + len(unlisted), tally, chunks, near, unique)
    report.update(config=config, tokenizer=tok_name, cache_key=key, cached=False)
    report["tokenizer_max_length"] = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if rebuilt:
        report["cache_rebuilt"] = rebuilt
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if out is not None:
        write_jsonl(out / "chunks.jsonl", chunks)
        write_json(out / "ingest_report.json", report)  # written last: its key marks a complete run
    return chunks, report


def _check_args(root: Path, chunk_tokens: int, overlap_tokens: int, min_tokens: int) -> None:
    if not root.exists():
        raise EmbedforgeError(f"input path not found: {root}")
    if chunk_tokens < 8:
        raise EmbedforgeError(f"chunk_tokens must be >= 8, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens // 2 + 1:
        raise EmbedforgeError(
            f"overlap_tokens must be in [0, chunk_tokens/2], got {overlap_tokens} (chunk_tokens={chunk_tokens})"
        )
    if min_tokens > chunk_tokens:
        raise EmbedforgeError(f"min_tokens ({min_tokens}) exceeds chunk_tokens ({chunk_tokens})")


def _read_file(
    f: Path, rel: str, hashes: dict, tally: _Tally, config: dict, tokenizer: Any
) -> None:
    """Extract and chunk one file into ``tally`` (or record why it was skipped)."""
    h = hashes[f]
    if h.startswith("too_large"):
        detail = f"{int(h.split(':')[1]) / 2**20:.1f} MB > max_file_mb={config['max_file_mb']:g}"
        tally.skipped.append({"path": rel, "reason": "too_large", "detail": detail})
        return
    if h in tally.by_hash and f.stat().st_size:
        detail = f"same bytes as {tally.by_hash[h]}"
        tally.skipped.append({"path": rel, "reason": "duplicate", "detail": detail})
        return
    problems: list = []
    try:
        docs = extract(f, problems, csv_text_column=config["csv_text_column"])
    except Unusable as e:
        tally.skipped.append({"path": rel, "reason": e.reason, "detail": e.detail})
        return
    except Exception as e:  # a reader bug or exotic file must not stop a whole corpus
        detail = f"{type(e).__name__}: {e}"
        tally.skipped.append({"path": rel, "reason": "unreadable", "detail": detail})
        return
    tally.by_hash[h] = rel
    tally.files_read += 1
    tally.by_type[f.suffix.lower()] += 1
    tally.records_skipped.extend(
        {"path": f"{rel}:{ln}", "reason": r, "detail": d} for ln, r, d in problems
    )
    n, overlap, least = config["chunk_tokens"], config["overlap_tokens"], config["min_tokens"]
    windows = [  # batches bound the memory of token offsets on huge JSONL/CSV files
        w
        for k in range(0, len(docs), 512)
        for w in chunk_documents(docs[k : k + 512], tokenizer, n, overlap, least)
    ]
    for doc, doc_windows in zip(docs, windows):
        tally.documents += 1
        for text, units, n_tok in doc_windows:
            if n_tok < least:
                tally.short += 1
                continue
            tally.raw.append(_chunk(doc, text, units, n_tok, rel))


def _chunk(doc: Document, text: str, units: list[_Unit], n: int, rel: str) -> dict:
    chunk = {
        "id": stable_hash(text),
        "text": text,
        "title": units[0].title,
        "source": rel,
        "start": units[0].start,
        "end": units[-1].end,
        "n_tokens": n,
    }
    if units[0].page is not None:
        chunk["page"], chunk["page_end"] = units[0].page, units[-1].page
    if doc.record is not None:
        chunk["record"] = doc.record
    if doc.doc_id is not None:
        chunk["doc_id"] = doc.doc_id
    return chunk


def _dedup(raw: list[dict], threshold: float) -> tuple[list[dict], dict[int, int], list[dict]]:
    """(kept chunks, near-duplicate index map over ``unique``, exact-deduplicated chunks)."""
    ids: set[str] = set()
    unique = []
    for c in raw:
        if c["id"] not in ids:
            ids.add(c["id"])
            unique.append(c)
    near = near_duplicates([c["text"] for c in unique], threshold) if threshold < 1 else {}
    return [c for i, c in enumerate(unique) if i not in near], near, unique


def _report(
    root: Path, seen: int, t: _Tally, chunks: list[dict], near: dict, unique: list[dict]
) -> dict:
    lengths = np.array([c["n_tokens"] for c in chunks])
    return {
        "root": str(root),
        "files_seen": seen,
        "files_read": t.files_read,
        "files_skipped": len(t.skipped),
        "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in t.skipped).items())),
        "skipped": t.skipped,
        "records_skipped": len(t.records_skipped),
        "records_skipped_detail": t.records_skipped[:1000],
        "files_by_type": dict(sorted(t.by_type.items())),
        "documents": t.documents,
        "chunks_before_dedup": len(t.raw),
        "exact_duplicates_removed": len(t.raw) - len(unique),
        "near_duplicates_removed": len(near),
        "near_duplicate_examples": [
            {"removed": _where(unique[i]), "kept": _where(unique[j])}
            for i, j in list(near.items())[:20]
        ],
        "short_chunks_dropped": t.short,
        "chunks": len(chunks),
        "tokens": {
            "mean": round(float(lengths.mean()), 1),
            "p50": int(np.percentile(lengths, 50)),
            "min": int(lengths.min()),
            "max": int(lengths.max()),
            "total": int(lengths.sum()),
        },
    }


def _hash_or_reason(f: Path, max_bytes: int) -> str:
    """Content hash of a supported file; unsupported, unreadable or too large ones are keyed by
    name (and size) only."""
    if f.suffix.lower() not in READERS:
        return "unsupported"
    try:
        size = f.stat().st_size
        return f"too_large:{size}" if size > max_bytes else file_hash(f)
    except OSError:
        return "unreadable"


def _where(chunk: dict) -> str:
    """``source[#doc_id|:record]@start``: where a chunk came from, for the report."""
    where = chunk["source"]
    if "doc_id" in chunk:
        where += f"#{chunk['doc_id']}"
    elif "record" in chunk:
        where += f":{chunk['record']}"
    return f"{where}@{chunk['start']}"


def _load_cache(out: Path, key: str) -> tuple[tuple[list[dict], dict] | None, str | None]:
    """(the cached result, None) when it matches ``key``; (None, why) when a cache for this key
    exists but is damaged (it is then rebuilt, with a warning); (None, None) when there is none."""
    rp, cp = out / "ingest_report.json", out / "chunks.jsonl"
    if not rp.is_file():
        return None, None
    try:
        report = json.loads(rp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, _warn_rebuild(rp, "unreadable ingest_report.json")
    if report.get("cache_key") != key:
        return None, None
    try:
        chunks = read_jsonl(cp)
    except (EmbedforgeError, OSError, ValueError) as e:  # missing, torn, undecodable
        return None, _warn_rebuild(cp, str(e).splitlines()[0] if str(e) else type(e).__name__)
    if len(chunks) != report.get("chunks"):
        why = f"chunks.jsonl holds {len(chunks)} chunks, the report says {report.get('chunks')}"
        return None, _warn_rebuild(cp, why)
    report["cached"] = True
    return (chunks, report), None


def _warn_rebuild(path: Path, why: str) -> str:
    log.warning("ingest cache %s is damaged (%s): rebuilding it", printable(path), printable(why))
    return why


def summary_lines(report: dict) -> list[str]:
    """Human-readable summary of an ingest report (what ``scripts/ingest.py`` prints)."""
    lines = [
        f"files: {report['files_seen']} seen, {report['files_read']} read, {report['files_skipped']} skipped"
        + (f" {report['skipped_by_reason']}" if report["skipped_by_reason"] else ""),
        f"documents: {report['documents']}  chunks: {report['chunks']} (before dedup"
        f" {report['chunks_before_dedup']}; exact duplicates removed {report['exact_duplicates_removed']},"
        f" near duplicates removed {report['near_duplicates_removed']}, shorter than min_tokens"
        f" {report['short_chunks_dropped']})",
        f"tokens per chunk: mean {report['tokens']['mean']}, p50 {report['tokens']['p50']},"
        f" min {report['tokens']['min']}, max {report['tokens']['max']}",
    ]
    if report["records_skipped"]:
        lines.append(f"records skipped inside JSONL/CSV files: {report['records_skipped']}")
    for s in report["skipped"][:20]:
        lines.append(f"  skipped {printable(s['path'])}: {s['reason']} ({printable(s['detail'])})")
    if len(report["skipped"]) > 20:
        lines.append(f"  ... and {len(report['skipped']) - 20} more (see ingest_report.json)")
    lines.append(f"{'cached' if report.get('cached') else 'done'} in {report['seconds']} s")
    return lines
