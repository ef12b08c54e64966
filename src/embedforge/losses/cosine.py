"""Cosine similarity regression on graded pairs (sentence-transformers' CosineSimilarityLoss)."""

from __future__ import annotations

import torch

from embedforge.losses.common import Loss, check_similarity, scored_pairs


class CosineSimilarityLoss(Loss):
    """Mean squared error between each pair's similarity and its graded label:
    ``mean((cos(q_i, d_i) - score_i)^2)``.

    A regression, not a ranking: it needs pairs with a ``score`` in [0, 1] (e.g. BEIR graded qrels,
    or STS-style data); hard negatives, when present, join as pairs with label 0. In-batch documents
    are not used. With positives only (every label 1) it would just pull every pair to cosine 1, so
    a batch without scores is a one-line error.

    Inputs: see :class:`~embedforge.losses.common.Loss`; ``scores`` (B,) is required.

    Reference: Reimers & Gurevych 2019, "Sentence-BERT"; sentence-transformers' CosineSimilarityLoss.

    Args:
        similarity: ``cos`` or ``dot``.
    """

    needs_scores = True

    def __init__(self, similarity: str = "cos"):
        super().__init__()
        self.similarity = check_similarity(similarity)

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        negatives: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # (P,) similarities and graded labels of every pair
        sim, target = scored_pairs(q, d, negatives, labels, scores, self.similarity, "cosine")
        return ((sim - target) ** 2).mean()
