"""Contrastive losses: pure functions of embeddings,
``forward(q, d, negatives=None, labels=None, scores=None)`` (:class:`~embedforge.losses.common.Loss`)."""

from embedforge.losses.common import Loss
from embedforge.losses.cosent import CoSENTLoss
from embedforge.losses.cosine import CosineSimilarityLoss
from embedforge.losses.matryoshka import MatryoshkaLoss
from embedforge.losses.mnrl import MultipleNegativesRankingLoss
from embedforge.losses.triplet import TripletLoss

__all__ = [
    "CoSENTLoss",
    "CosineSimilarityLoss",
    "Loss",
    "MatryoshkaLoss",
    "MultipleNegativesRankingLoss",
    "TripletLoss",
]
