"""Append-only result cache: one JSON line per finished chunk, flushed as soon as it is known.

A crash or Ctrl-C loses only the requests in flight; a rerun reads the file and sends nothing that
already has a line. A half-written last line (killed mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
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
        if self.path is not None and self.path.is_file():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash: that chunk is simply redone
                    if isinstance(row, dict) and "key" in row:
                        self._records[row["key"]] = row
        self._fh = None

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
