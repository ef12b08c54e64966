"""Triplet margin loss on cosine distance."""

from __future__ import annotations

import torch

from embedforge.errors import EmbedforgeError
from embedforge.losses.common import Loss, check_similarity, row_similarity, similarity


class TripletLoss(Loss):
    """Hinge on distances: ``mean(relu(dist(q, p) - dist(q, n) + margin))``.

    The distance is ``1 - cos`` (or ``-dot``). Every (query, hard negative) pair is one triplet; when a
    batch has no hard negatives, each query's hardest in-batch negative (the most similar other
    document) is used instead ("batch-hard", Hermans et al. 2017).

    Inputs: ``q`` (B, D); ``d`` (B_d, D), ``B_d >= B``; ``negatives`` (B_d, N, D) laid out like ``d``, or
    None; ``labels`` (B,) the row of each query's positive in ``d`` (default ``arange(B)``).

    Reference: Schroff et al. 2015, "FaceNet"; sentence-transformers' TripletLoss.

    Args:
        margin: required gap between positive and negative distance.
        similarity: ``cos`` or ``dot``.
    """

    def __init__(self, margin: float = 0.1, similarity: str = "cos"):
        super().__init__()
        if not float(margin) >= 0:
            raise EmbedforgeError(f"loss.margin must be a number >= 0, got {margin!r}")
        self.margin = float(margin)
        self.similarity = check_similarity(similarity)

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        negatives: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b = q.shape[0]
        if labels is None:
            labels = torch.arange(b, device=q.device)
        sim_qd = similarity(q, d, self.similarity)  # (B, B_d)
        pos = sim_qd[torch.arange(b, device=q.device), labels]  # (B,)
        if negatives is not None and negatives.numel() > 0:
            # negatives are laid out like d (gathered the same way under DDP), so labels find them
            own = negatives[labels]  # (B, N, D)
            neg = row_similarity(q, own, self.similarity)  # (B, N)
        else:
            mask = torch.zeros_like(sim_qd, dtype=torch.bool)
            mask[torch.arange(b, device=q.device), labels] = True
            neg = sim_qd.masked_fill(mask, float("-inf")).max(dim=1, keepdim=True).values  # (B, 1)
        # distance = -similarity (+1 for cosine; constants cancel in the difference)
        return torch.relu(neg - pos[:, None] + self.margin).mean()
