"""Retrieval evaluation with BEIR / pytrec_eval semantics, and the ship gate."""

from embedforge.eval.metrics import DEFAULT_METRICS, compute_metrics
from embedforge.eval.retrieval import EvalResult, RetrievalSet, evaluate
from embedforge.eval.ship import SHIP_METRIC, check_quality_gate

__all__ = [
    "DEFAULT_METRICS",
    "SHIP_METRIC",
    "EvalResult",
    "RetrievalSet",
    "check_quality_gate",
    "compute_metrics",
    "evaluate",
]
