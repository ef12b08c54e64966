"""Retrieval evaluation with BEIR / pytrec_eval semantics."""

from embedforge.eval.metrics import compute_metrics
from embedforge.eval.retrieval import EvalResult, RetrievalSet, evaluate

__all__ = ["compute_metrics", "evaluate", "EvalResult", "RetrievalSet"]
