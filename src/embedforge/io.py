"""File helpers shared by every stage: JSONL with line-numbered errors, atomic writes, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedforge.errors import EmbedforgeError


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not an existing file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EmbedforgeError(f"{what} not found: {p}")
    return p


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-empty line; a bad line raises an error naming the file and line."""
    for _, row in iter_numbered_jsonl(path):
        yield row


def iter_numbered_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, dict)`` per non-empty line of a UTF-8 JSONL file (a leading BOM is
    skipped); a line that is not UTF-8, not JSON or not an object is an error naming file and line."""
    p = require_file(path)
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_line(raw, p, lineno)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EmbedforgeError(f"{p}:{lineno}: malformed JSON line ({e.msg})") from None
            if not isinstance(row, dict):
                raise EmbedforgeError(
                    f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            yield lineno, row


def decode_line(raw: bytes, path: Path, lineno: int) -> str:
    """One line of a UTF-8 text file (the BOM of line 1 dropped); else an error naming the byte."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EmbedforgeError(
            f"{path}:{lineno}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
        ) from None
    return line.removeprefix("\ufeff") if lineno == 1 else line


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (threads may be writing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """An open temp file beside ``path``, renamed onto it when the block ends without error,
    so readers never see half a file.

    The file gets the mode of any new file (``0o666`` less the umask), not the ``0o600`` of the
    private temp file it starts as.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file + rename, so readers never see half a file."""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Atomically write rows as JSONL."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"
    )


def stable_hash(*parts: Any, n: int = 16) -> str:
    """Content hash of JSON-serialisable parts (sorted keys), hex, ``n`` characters."""
    h = hashlib.sha256()
    for part in parts:
        text = json.dumps(part, sort_keys=True, ensure_ascii=False, default=str)
        h.update(text.encode("utf-8", "surrogatepass"))  # lone surrogates: undecodable file names
        h.update(b"\x00")
    return h.hexdigest()[:n]


def file_hash(path: str | Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]
