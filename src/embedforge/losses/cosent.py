"""CoSENT: a ranking loss over graded pairs (Su 2022; AnglE; sentence-transformers' CoSENTLoss)."""

from __future__ import annotations

import torch

from embedforge.losses.common import Loss, check_positive, check_similarity, scored_pairs


class CoSENTLoss(Loss):
    """``log(1 + sum over pairs (i, j) with score_i > score_j of exp(scale * (cos_j - cos_i)))``.

    Every pair of the batch that is labelled more relevant must be more similar than every pair
    labelled less relevant; only the order of the labels matters, not their values (unlike
    :class:`~embedforge.losses.cosine.CosineSimilarityLoss`). Pairs are (q_i, its positive) with
    label ``score_i``, and (q_i, each hard negative) with label 0. A batch whose labels are all
    equal has no ordered pair and a loss of 0; a batch without scores is a one-line error.

    Inputs: see :class:`~embedforge.losses.common.Loss`; ``scores`` (B,) is required.

    Reference: Su 2022, "CoSENT"; Li & Li 2023, "AnglE-optimized Text Embeddings";
    sentence-transformers' CoSENTLoss.

    Args:
        scale: inverse temperature (20 = temperature 0.05).
        similarity: ``cos`` or ``dot``.
    """

    needs_scores = True

    def __init__(self, scale: float = 20.0, similarity: str = "cos"):
        super().__init__()
        self.scale = check_positive("scale", scale)
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
        sim, target = scored_pairs(q, d, negatives, labels, scores, self.similarity, "cosent")
        # (P, P): [i, j] = scale * (cos_j - cos_i)
        diff = self.scale * (sim[None, :] - sim[:, None])
        ordered = target[:, None] > target[None, :]  # (P, P): label_i > label_j
        terms = torch.cat([diff.new_zeros(1), diff[ordered]])  # the 0 is the "1 +" inside the log
        return torch.logsumexp(terms, dim=0)
