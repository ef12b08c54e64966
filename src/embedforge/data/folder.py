"""``data=folder``: a team's own documents (a folder of txt/md/html/pdf/docx/jsonl/csv files).

The folder is ingested into deduplicated, token-aware chunks (:func:`embedforge.data.ingest.ingest`,
cached under ``cache_dir``); the generator turns the chunks into training pairs. Labelled pairs
(``pairs_path``) and a BEIR evaluation set (``eval_path``) are optional; without an eval set the
pipeline holds out a slice of the generated pairs.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from embedforge.data.ingest import DEFAULTS, ingest
from embedforge.data.sources import BeirSource, DataSource, read_pairs
from embedforge.errors import EmbedforgeError
from embedforge.eval.retrieval import RetrievalSet
from embedforge.io import stable_hash
from embedforge.types import Chunk, Pair

log = logging.getLogger(__name__)


def load_tokenizer(name_or_path: str) -> Any:
    """The Hugging Face tokenizer of a model id, local dir or ``packaged:<name>`` (no model weights)."""
    from transformers import AutoTokenizer

    from embedforge.models.encoder import resolve_model_path

    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EmbedforgeError(
            f"could not load the tokenizer of {name_or_path!r}: {first}"
        ) from None


class FolderSource(DataSource):
    """Documents from a folder (or one file), chunked with the model's tokenizer.

    Args:
        path: folder (recursive) or file to ingest.
        name: label for the run directory (default: the folder name).
        tokenizer: model whose tokenizer counts chunk tokens (interpolated from ``model``).
        max_seq_length: the model's max tokens; ``chunk_tokens`` is capped to fit it with the
            special tokens and ``doc_prefix``.
        doc_prefix: the model's document prefix (counted against ``max_seq_length``).
        chunk_tokens / overlap_tokens / min_tokens / near_dup_threshold / csv_text_column /
            max_file_mb: see
            :func:`embedforge.data.ingest.ingest`.
        cache_dir: ingested chunks are cached in ``<cache_dir>/ingest/<name>-<hash of path>``.
        pairs_path: labelled pairs JSONL (``{"query", "positive", "negatives"?}``), source ``real``.
        eval_path: BEIR directory for the reported evaluation (else a held-out slice of pairs).
        eval_split / val_split / eval_corpus / eval_max_queries / eval_max_docs: as in BeirSource.
        gen_max_docs: cap on the chunks handed to the generator (seeded sample), null = all.
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        tokenizer: str = "packaged:all-MiniLM-L6-v2",
        max_seq_length: int | None = None,
        doc_prefix: str = "",
        chunk_tokens: int = DEFAULTS.chunk_tokens,
        overlap_tokens: int = DEFAULTS.overlap_tokens,
        min_tokens: int = DEFAULTS.min_tokens,
        near_dup_threshold: float = DEFAULTS.near_dup_threshold,
        csv_text_column: str = DEFAULTS.csv_text_column,
        max_file_mb: float = DEFAULTS.max_file_mb,
        cache_dir: str | None = None,
        pairs_path: str | None = None,
        eval_path: str | None = None,
        eval_split: str = "test",
        val_split: str | None = "dev",
        eval_corpus: str = "all",
        eval_max_queries: int | None = None,
        eval_max_docs: int | None = None,
        gen_max_docs: int | None = None,
        **kwargs: Any,
    ):
        self.path = Path(str(path)).expanduser()
        if not self.path.exists():
            raise EmbedforgeError(f"data.path not found: {self.path}")
        super().__init__(name=name or self.path.stem, **kwargs)
        self.tokenizer_name = tokenizer
        self.max_seq_length = max_seq_length
        self.doc_prefix = doc_prefix or ""
        self.chunk_tokens = int(chunk_tokens)
        self.overlap_tokens = int(overlap_tokens)
        self.min_tokens = int(min_tokens)
        self.near_dup_threshold = float(near_dup_threshold)
        self.csv_text_column = csv_text_column
        self.max_file_mb = float(max_file_mb)
        cache = (
            Path(str(cache_dir)).expanduser()
            if cache_dir
            else Path.home() / ".cache" / "embedforge"
        )
        self.out_dir = (
            cache / "ingest" / f"{self.name}-{stable_hash(str(self.path.resolve()), n=10)}"
        )
        self.pairs_path = pairs_path
        self.gen_max_docs = gen_max_docs
        self._beir = (
            BeirSource(
                eval_path, name=self.name, eval_split=eval_split, val_split=val_split,
                eval_corpus=eval_corpus, eval_max_queries=eval_max_queries,
                eval_max_docs=eval_max_docs, val_max_queries=self.val_max_queries,
                val_max_docs=self.val_max_docs, seed=self.seed,
            )
            if eval_path
            else None
        )  # fmt: skip
        self._chunks: list[Chunk] | None = None
        self.report: dict[str, Any] | None = None

    def effective_chunk_tokens(self, tokenizer: Any) -> int:
        """``chunk_tokens`` capped so a chunk plus specials and ``doc_prefix`` fits the model."""
        if not self.max_seq_length:
            return self.chunk_tokens
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        prefix = (
            len(tokenizer(self.doc_prefix, add_special_tokens=False)["input_ids"])
            if self.doc_prefix
            else 0
        )
        cap = int(self.max_seq_length) - specials - prefix
        if cap < self.chunk_tokens:
            log.info(
                "data.chunk_tokens %d capped to %d (model max_seq_length %d)",
                self.chunk_tokens,
                cap,
                self.max_seq_length,
            )
        return max(8, min(self.chunk_tokens, cap))

    def chunking(self, tokenizer: Any) -> dict[str, int]:
        """``chunk_tokens`` (:meth:`effective_chunk_tokens`), with ``overlap_tokens`` and
        ``min_tokens`` capped to fit it: the chunk settings of ``data=folder`` and ``ingest``."""
        n = self.effective_chunk_tokens(tokenizer)
        return {
            "chunk_tokens": n,
            "overlap_tokens": min(self.overlap_tokens, n // 2),
            "min_tokens": min(self.min_tokens, n),
        }

    def all_chunks(self) -> list[Chunk]:
        """Every ingested chunk (cached on disk and in memory)."""
        if self._chunks is None:
            tok = load_tokenizer(self.tokenizer_name)
            self._chunks, self.report = ingest(
                self.path, tok, **self.chunking(tok), out_dir=self.out_dir,
                near_dup_threshold=self.near_dup_threshold, csv_text_column=self.csv_text_column,
                max_file_mb=self.max_file_mb,
            )  # fmt: skip
        return self._chunks

    def chunks(self) -> list[Chunk]:
        chunks = self.all_chunks()
        if self.gen_max_docs and len(chunks) > self.gen_max_docs:
            idx = sorted(
                random.Random(self.seed).sample(range(len(chunks)), int(self.gen_max_docs))
            )
            chunks = [chunks[i] for i in idx]
        return chunks

    def corpus(self) -> list[Chunk]:
        return self.all_chunks()

    def real_pairs(self) -> list[Pair]:
        return read_pairs(self.pairs_path) if self.pairs_path else []

    def eval_set(self) -> RetrievalSet | None:
        return self._beir.eval_set() if self._beir else None

    def val_set(self) -> RetrievalSet | None:
        return self._beir.val_set() if self._beir else None

    def summary(self) -> dict[str, Any]:
        self.all_chunks()
        r = self.report or {}
        return {
            "name": self.name,
            "path": str(self.path),
            "chunks": r.get("chunks"),
            "files_read": r.get("files_read"),
            "files_skipped": r.get("skipped_by_reason"),
            "duplicates_removed": (
                r.get("exact_duplicates_removed", 0) + r.get("near_duplicates_removed", 0)
            ),
            "chunk_tokens": r.get("config", {}).get("chunk_tokens"),
            "ingest_dir": str(self.out_dir),
            "pairs_path": self.pairs_path,
            "eval": self._beir.summary() if self._beir else "held-out generated pairs",
        }
