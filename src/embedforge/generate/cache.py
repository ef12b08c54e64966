"""Append-only result cache: one JSON line per finished chunk, flushed as soon as it is known.

A crash or Ctrl-C loses only the requests in flight; a rerun reads the file and sends nothing that
already has a line. Opening repairs what a crash or a bad disk leaves behind: a torn last line
(killed mid-write) is cut off, so the next record starts on a line of its own; lines that are not
valid UTF-8 or not JSON are skipped. Both are counted in ``skipped`` (those chunks are redone).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any


class GenerationCache:
    """``key -> record`` backed by a JSONL file.

    Args:
        path: the cache file (created with its directory on first write); ``None`` keeps
            results in memory only.
        fsync: also fsync every line (survives power loss, slower).
    """

    def __init__(self, path: str | Path | None, fsync: bool = False):
        self.path = Path(path) if path is not None else None  # None: in memory only
        self.fsync = fsync
        self._records: dict[str, dict[str, Any]] = {}
        self.skipped: Counter = Counter()  # torn / undecodable / malformed lines
        if self.path is not None and self.path.is_file():
            self._load(self.path)
        self._fh = None

    def _load(self, path: Path) -> None:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):  # torn by a kill mid-write: cut it off for good
            keep = data.rfind(b"\n") + 1
            with path.open("r+b") as f:
                f.truncate(keep)
            data = data[:keep]
            self.skipped["torn"] += 1
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                self.skipped["undecodable"] += 1
                continue
            except json.JSONDecodeError:
                self.skipped["malformed"] += 1
                continue
            if isinstance(row, dict) and "key" in row:
                self._records[row["key"]] = row
            else:
                self.skipped["malformed"] += 1

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def put(self, record: dict[str, Any]) -> None:
        """Append one record (must hold ``key``) and flush it to the OS."""
        if self._fh is None and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        if self._fh is not None:
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        self._records[record["key"]] = record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
