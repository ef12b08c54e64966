"""Multiple negatives ranking loss (InfoNCE with in-batch negatives)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embedforge.losses.common import (
    Loss,
    candidates,
    check_margin,
    check_positive,
    check_similarity,
    mask_false_negatives,
    similarity,
)


class MultipleNegativesRankingLoss(Loss):
    """InfoNCE over in-batch negatives, plus hard negatives as extra columns.

    Optimizes cross-entropy of ``scale * sim(q_i, c_j)`` against the index of q_i's positive, where
    the candidates ``c`` are every document in the batch (all ranks' documents under DDP) followed by
    every hard negative. With ``symmetric``, adds the document-to-query direction (each positive must
    pick its own query among the batch's queries) and averages the two.

    Inputs: ``q`` (B, D) queries; ``d`` (B_d, D) documents, ``B_d >= B``; ``negatives`` (B, N, D) or
    None; ``labels`` (B,) the row of each query's positive in ``d`` (default ``arange(B)``).

    Reference: Henderson et al. 2017, "Efficient Natural Language Response Suggestion"; van den Oord
    et al. 2018 (InfoNCE); sentence-transformers' MultipleNegativesRankingLoss.

    Args:
        scale: inverse temperature (20 = temperature 0.05).
        symmetric: add the document-to-query term.
        similarity: ``cos`` or ``dot``.
        false_negative_margin: drop (mask to ``-inf``) every in-batch or hard negative whose
            similarity exceeds the positive's by more than this (null = off); in both directions
            when ``symmetric``.
    """

    def __init__(
        self,
        scale: float = 20.0,
        symmetric: bool = False,
        similarity: str = "cos",
        false_negative_margin: float | None = None,
    ):
        super().__init__()
        self.scale = check_positive("scale", scale)
        self.symmetric = bool(symmetric)
        self.similarity = check_similarity(similarity)
        self.false_negative_margin = check_margin(false_negative_margin)

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        negatives: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if labels is None:
            labels = torch.arange(q.shape[0], device=q.device)
        margin = self.false_negative_margin
        sim = similarity(q, candidates(d, negatives), self.similarity)  # (B, B_d+B*N)
        loss = F.cross_entropy(self.scale * mask_false_negatives(sim, labels, margin), labels)
        if self.symmetric:
            diag = torch.arange(q.shape[0], device=q.device)
            sim_t = similarity(d[labels], q, self.similarity)  # (B, B)
            loss_t = F.cross_entropy(self.scale * mask_false_negatives(sim_t, diag, margin), diag)
            loss = (loss + loss_t) / 2
        return loss
