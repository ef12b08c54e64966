"""Matryoshka representation learning: any loss, summed over truncated embedding prefixes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from embedforge.errors import EmbedforgeError
from embedforge.losses.common import Loss


def truncate(x: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    """The first ``dim`` coordinates of the last axis, L2-renormalized (None stays None)."""
    if x is None:
        return None
    return F.normalize(x[..., :dim].float(), dim=-1)


def check_dims(key: str, dims: Sequence[int] | None) -> list[int]:
    """``dims`` as distinct positive integers, else a one-line error naming ``key``."""
    try:
        out = [int(k) for k in dims or []]
        ok = bool(out) and all(k > 0 and k == float(v) for k, v in zip(out, dims))
    except (TypeError, ValueError):
        ok = False
    if not ok or len(set(out)) != len(out):
        raise EmbedforgeError(
            f"{key} must be a non-empty list of distinct integers > 0, got {dims!r}"
        )
    return out


class MatryoshkaLoss(Loss):
    """``sum_k w_k * inner(q[:, :k], d[:, :k], negatives[..., :k])`` over ``matryoshka_dims``, each
    truncation L2-renormalized, so every prefix of the embedding is itself a usable embedding.

    Truncation happens inside the loss, so the loss stays a function of the full embeddings: it works
    unchanged under gradient caching (the cached gradient is taken on the full embeddings) and DDP
    gathering (labels and scores are passed through to the inner loss).

    Inputs: see :class:`~embedforge.losses.common.Loss` (passed to ``inner`` at every dimension).

    Reference: Kusupati et al. 2022, "Matryoshka Representation Learning"; sentence-transformers'
    MatryoshkaLoss.

    Args:
        inner: the loss applied at every dimension (any :class:`Loss`).
        matryoshka_dims: the prefix sizes, e.g. ``[384, 256, 128, 64]``; each <= the model's dim.
        matryoshka_weights: one weight per dimension (null = all 1).
    """

    def __init__(
        self,
        inner: Loss,
        matryoshka_dims: Sequence[int] = (384, 256, 128, 64),
        matryoshka_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        if isinstance(inner, MatryoshkaLoss):
            raise EmbedforgeError("loss.inner must not itself be a matryoshka loss")
        self.inner = inner
        self.matryoshka_dims = check_dims("loss.matryoshka_dims", matryoshka_dims)
        weights = [1.0] * len(self.matryoshka_dims)
        if matryoshka_weights is not None:
            weights = [float(w) for w in matryoshka_weights]
            if len(weights) != len(self.matryoshka_dims) or not all(w >= 0 for w in weights):
                raise EmbedforgeError(
                    f"loss.matryoshka_weights must be {len(self.matryoshka_dims)} numbers >= 0 (one per"
                    f" loss.matryoshka_dims), got {list(matryoshka_weights)!r}"
                )
        self.matryoshka_weights = weights

    @property
    def needs_scores(self) -> bool:  # type: ignore[override]
        return self.inner.needs_scores

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        negatives: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        full = q.shape[-1]
        too_big = [k for k in self.matryoshka_dims if k > full]
        if too_big:
            raise EmbedforgeError(
                f"loss.matryoshka_dims {too_big} exceed the model's embedding dimension {full}"
            )
        total = q.new_zeros((), dtype=torch.float32)
        for k, w in zip(self.matryoshka_dims, self.matryoshka_weights):
            total = total + w * self.inner(
                truncate(q, k), truncate(d, k), truncate(negatives, k), labels, scores
            )  # each term on (B, k) embeddings
        return total
