"""The embedding store: each text encoded once per set of weights, within a run and across runs.

Content-addressed on disk: ``<root>/<fingerprint>/`` holds shards of one model as it encodes (its
weights, modules, max length, prefix, device: :meth:`Encoder.fingerprint`), each shard a pair of
``.npy`` files: ``<sha>.emb.npy`` (``(n, D)`` in the store's dtype, memory-mapped when read) and
``<sha>.keys.npy`` (the 16-byte blake2b of each text). ``<sha>`` is the content hash of the
embedding file: a shard that is truncated, unreadable or does not match its hash is dropped with a
warning and its texts are encoded again; the run never fails for the cache. Shards are written
atomically (temp file + rename, keys last), so parallel sweep jobs share one store safely.

Every stage that encodes with the same weights (validation set building, baseline eval and
validation, hard-negative mining, the strategy probe, the final eval when the base model is
shipped) goes through ``Encoder.encode``, which asks the store first; :meth:`summary` counts, per
fingerprint, the texts encoded and the cache hits (``metrics.json`` ``encodes``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import EmbedforgeError
from embedforge.io import atomic_file

log = logging.getLogger(__name__)

#: dtypes a store may keep (float16 halves the disk; scores then differ in the 4th decimal)
DTYPES = ("float32", "float16")
_KEY = np.dtype("S16")


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The 16-byte blake2b digest of each text, ``(N,)`` of dtype ``S16``."""
    return np.array(
        [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts], dtype=_KEY
    )


class EmbeddingStore:
    """Embeddings of texts by model fingerprint, on disk under ``root`` (see the module docstring).

    Args:
        root: the cache directory (``paths.embedding_cache``).
        dtype: ``float32`` (exact) or ``float16`` (half the disk).
        max_gb: when the store exceeds this size at construction, the least recently used
            fingerprints are deleted until it fits (None: never).
    """

    def __init__(self, root: str | Path, dtype: str = "float32", max_gb: float | None = 20.0):
        if str(dtype) not in DTYPES:
            raise EmbedforgeError(f"embedding_store.dtype must be one of {DTYPES}, got {dtype!r}")
        self.root = Path(root).expanduser()
        self.dtype = np.dtype(str(dtype))
        self.max_gb = None if max_gb is None else float(max_gb)
        self.counts: dict[str, dict[str, Any]] = {}
        self._shelves: dict[str, _Shelf] = {}
        self.prune()

    def encode(
        self,
        encoder: Any,
        texts: Sequence[str],
        kind: str,
        batch_size: int = 64,
        show_progress: bool = True,
    ) -> np.ndarray:
        """``encoder.encode_uncached`` for the texts the store lacks; float32 ``(N, D)`` in input
        order (a read-only memory map when the texts are one stored run in order)."""
        fingerprint = f"{encoder.fingerprint(kind)}-{self.dtype.name}"
        count = self.counts.setdefault(
            fingerprint,
            {
                "model": encoder.name,
                "kinds": [],
                "texts_encoded": 0,
                "cache_hits": 0,
                "repeats": 0,
            },
        )
        if kind not in count["kinds"]:  # query and doc share a fingerprint without prefixes
            count["kinds"].append(kind)
        keys = text_keys(texts)
        shelf = self._shelf(fingerprint, count)
        rows = shelf.lookup(keys)
        todo = np.flatnonzero(rows < 0)
        if len(todo):
            _, first = np.unique(keys[todo], return_index=True)
            new = np.sort(todo[first])  # each missing text once, in input order
            emb = encoder.encode_uncached([texts[i] for i in new], kind, batch_size, show_progress)
            shelf.add(keys[new], emb.astype(self.dtype))
            rows = shelf.lookup(keys)
            count["texts_encoded"] += len(new)
            count["repeats"] += len(todo) - len(new)
        count["cache_hits"] += len(keys) - len(todo)
        return shelf.gather(rows, encoder.dim)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (``ddp_spawn``) without the memory maps: the other process reopens the shards."""
        return {**self.__dict__, "_shelves": {}}

    def summary(self) -> dict[str, Any]:
        """Counts per fingerprint: ``{model, kinds, texts_encoded, cache_hits, repeats}`` (repeats:
        the same text twice in one request, encoded once), plus ``corrupt_shards`` when any."""
        return {"dir": str(self.root), "dtype": self.dtype.name, "by_weights": self.counts}

    def _shelf(self, fingerprint: str, count: dict[str, Any]) -> _Shelf:
        if fingerprint not in self._shelves:
            self._shelves[fingerprint] = _Shelf(self.root / fingerprint, self.dtype, count)
        return self._shelves[fingerprint]

    def prune(self) -> None:
        """Delete the least recently used fingerprint folders while the store exceeds ``max_gb``."""
        if self.max_gb is None or not self.root.is_dir():
            return
        folders = []
        for d in self.root.iterdir():
            if d.is_dir():
                size = sum(f.stat().st_size for f in d.glob("*") if f.is_file())
                folders.append((d.stat().st_mtime, size, d))
        total = sum(s for _, s, _ in folders)
        for _, size, d in sorted(folders, key=lambda x: x[0]):
            if total <= self.max_gb * 1e9:
                break
            shutil.rmtree(d, ignore_errors=True)
            total -= size
            log.info("embedding store: pruned %s (%.1f MB; over max_gb)", d.name, size / 1e6)


class _Shelf:
    """The shards of one fingerprint: a sorted key index over every shard's rows."""

    def __init__(self, folder: Path, dtype: np.dtype, count: dict[str, Any]):
        self.folder, self.dtype, self.count = folder, dtype, count
        self.shards: list[np.ndarray] = []  # memory maps (or in-memory when a write failed)
        self.offsets = [0]
        self.keys = np.zeros(0, _KEY)  # every key, sorted
        self.where = np.zeros(0, np.int64)  # their global row
        self._writable = True
        if folder.is_dir():
            os.utime(folder)  # recently used: pruned last
            for keys_file in sorted(folder.glob("*.keys.npy")):
                shard = self._open(keys_file)
                if shard is not None:
                    self._append(*shard)

    def _open(self, keys_file: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """A shard's (keys, embeddings), or None (deleted) when it is unreadable or corrupt."""
        name = keys_file.name.removesuffix(".keys.npy")
        emb_file = keys_file.with_name(f"{name}.emb.npy")
        try:
            if _sha(emb_file) != name:
                raise ValueError("content does not match its hash")
            keys = np.load(keys_file, allow_pickle=False)
            emb = np.load(emb_file, mmap_mode="r", allow_pickle=False)
            if keys.dtype != _KEY or emb.dtype != self.dtype or emb.ndim != 2:
                raise ValueError(f"unexpected dtypes {keys.dtype}/{emb.dtype}")
            if len(keys) != emb.shape[0] or (
                self.shards and emb.shape[1] != self.shards[0].shape[1]
            ):
                raise ValueError(f"shape {emb.shape} does not fit {len(keys)} keys")
            return keys, emb
        except (OSError, ValueError, EOFError) as e:
            log.warning(
                "embedding store: dropped shard %s (%s); its texts are encoded again", emb_file, e
            )
            self.count["corrupt_shards"] = self.count.get("corrupt_shards", 0) + 1
            for f in (keys_file, emb_file):
                try:
                    f.unlink(missing_ok=True)
                except OSError:
                    pass
            return None

    def _append(self, keys: np.ndarray, emb: np.ndarray) -> None:
        start = self.offsets[-1]
        self.shards.append(emb)
        self.offsets.append(start + len(keys))
        keys = np.concatenate([self.keys, keys])
        where = np.concatenate([self.where, np.arange(start, start + len(emb), dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        self.keys, self.where = keys[order], where[order]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Each key's global row, -1 when absent."""
        if not len(self.keys):
            return np.full(len(keys), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.where[pos], -1)

    def add(self, keys: np.ndarray, emb: np.ndarray) -> None:
        """Write a shard (atomically; in memory only when the folder is not writable)."""
        if self._writable:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = self.folder / f".new-{os.getpid()}-{time.monotonic_ns()}.npy"
                with atomic_file(tmp) as f:
                    np.save(f, emb, allow_pickle=False)
                name = _sha(tmp)
                emb_file = self.folder / f"{name}.emb.npy"
                os.replace(tmp, emb_file)
                with atomic_file(self.folder / f"{name}.keys.npy") as f:
                    np.save(f, keys, allow_pickle=False)
                emb = np.load(emb_file, mmap_mode="r", allow_pickle=False)
            except OSError as e:
                self._writable = False
                log.warning(
                    "embedding store: cannot write %s (%s); keeping embeddings in memory",
                    self.folder,
                    e,
                )
        self._append(keys, emb)

    def gather(self, rows: np.ndarray, dim: int) -> np.ndarray:
        """float32 ``(len(rows), D)``: a view of one shard when ``rows`` are one run of it."""
        if not len(rows):
            return np.zeros((0, dim), np.float32)
        shard = int(np.searchsorted(self.offsets, rows[0], side="right")) - 1
        start = rows[0] - self.offsets[shard]
        stop = start + len(rows)
        if (
            self.dtype == np.float32
            and stop <= len(self.shards[shard])
            and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
        ):
            return self.shards[shard][start:stop]
        out = np.empty((len(rows), self.shards[0].shape[1]), np.float32)
        owner = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(owner):
            mask = owner == s
            out[mask] = self.shards[s][rows[mask] - self.offsets[s]]
        return out


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]
