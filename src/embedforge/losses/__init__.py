"""Contrastive losses: pure functions of embeddings, ``forward(q, d, negatives=None, labels=None)``."""

from embedforge.losses.mnrl import MultipleNegativesRankingLoss
from embedforge.losses.triplet import TripletLoss

__all__ = ["MultipleNegativesRankingLoss", "TripletLoss"]
