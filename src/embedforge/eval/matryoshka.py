"""Evaluation of truncated embeddings (Matryoshka models): the first ``k`` coordinates of every
query and document embedding, L2-renormalized, searched exactly like the full embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedforge.errors import EmbedforgeError
from embedforge.eval.metrics import DEFAULT_METRICS
from embedforge.eval.retrieval import RetrievalSet, evaluate


class TruncatedEncoder:
    """``encoder.encode`` cut to the first ``dim`` coordinates and renormalized (``dim`` None: the
    full embeddings, as they are).

    The full embeddings of a text list are computed once and shared through ``cache`` by every
    dimension and by the full-dimension evaluation, so the corpus is encoded once per model.
    """

    def __init__(self, encoder, dim: int | None, cache: dict | None = None):
        self.encoder = encoder
        self.dim = None if dim is None else int(dim)
        self.cache = {} if cache is None else cache

    def encode(
        self, texts: Sequence[str], kind: str, batch_size: int = 64, show_progress: bool = True
    ) -> np.ndarray:
        key = (kind, tuple(texts))  # the texts themselves: no hash collision can mix two sets
        if key not in self.cache:
            self.cache[key] = self.encoder.encode(texts, kind, batch_size, show_progress)
        full = self.cache[key]  # (N, D)
        if self.dim is None:
            return full
        if self.dim > full.shape[1]:
            raise EmbedforgeError(
                f"eval.matryoshka_dims: {self.dim} exceeds the model's embedding dimension {full.shape[1]}"
            )
        cut = full[:, : self.dim]  # (N, dim)
        norm = np.linalg.norm(cut, axis=1, keepdims=True)
        return (cut / np.maximum(norm, 1e-12)).astype(np.float32)


def evaluate_dims(
    encoder,
    rset: RetrievalSet,
    dims: Sequence[int],
    metrics: Sequence[str] = DEFAULT_METRICS,
    batch_size: int = 64,
    empty_queries: str = "zero",
    cache: dict | None = None,
) -> dict[str, dict[str, float]]:
    """Metric means of the truncated embeddings at each dimension: ``{str(dim): {metric: value}}``
    (one encoding of the corpus and queries for all dimensions; ``cache``: full embeddings already
    computed, e.g. by the full-dimension evaluation through a ``TruncatedEncoder(encoder, None)``)."""
    cache = {} if cache is None else cache
    out: dict[str, dict[str, float]] = {}
    for k in dims:
        r = evaluate(
            TruncatedEncoder(encoder, k, cache),
            rset,
            list(metrics),
            batch_size,
            show_progress=False,
            empty_queries=empty_queries,
        )
        out[str(int(k))] = {m: round(float(v), 6) for m, v in r.metrics.items()}
    return out
