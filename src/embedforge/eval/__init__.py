"""Retrieval evaluation with BEIR / pytrec_eval semantics, and the ship gate.

The torch-backed names (:mod:`embedforge.eval.retrieval`) load on first use, so that validating a
config or printing a command's ``--help`` does not import torch.
"""

from embedforge.eval.metrics import DEFAULT_METRICS, compute_metrics
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


def __getattr__(name: str):
    if name in ("EvalResult", "RetrievalSet", "evaluate"):
        from embedforge.eval import retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
