"""The ship metric and gate: a fine-tuned model that does not beat its baseline is not shipped.

The pipeline records the verdict in ``metrics.json`` (``ship``); export refuses a run that fails it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embedforge.errors import EmbedforgeError

#: the metric the ship gate, reports and run tables lead with
SHIP_METRIC = "ndcg@10"


def passes(gain: float, min_gain: float) -> bool:
    """Whether an absolute ``SHIP_METRIC`` gain clears ``ship.min_gain``."""
    return gain >= min_gain - 1e-12


def check_quality_gate(
    baseline: Mapping[str, float] | None,
    finetuned: Mapping[str, float] | None,
    min_gain: float,
    force: bool = False,
    where: str = "run",
    action: str = "export",
) -> dict[str, Any]:
    """Check fine-tuned minus baseline ``SHIP_METRIC`` >= ``min_gain``; raise unless ``force``.

    Args:
        baseline: the base model's metrics (``metrics.json`` ``baseline``).
        finetuned: the shipped model's metrics (``metrics.json`` ``finetuned``).
        min_gain: the required absolute gain (``ship.min_gain``).
        force: export anyway; the returned record says the gate was overridden.
        where: the run's path, for the error message.
        action: what is refused (``export``, ``push``), for the error message.

    Returns:
        ``{"metric", "baseline", "finetuned", "gain", "min_gain", "passed", "forced"}``.
    """
    try:
        base = float(baseline[SHIP_METRIC])  # type: ignore[index]
        tuned = float(finetuned[SHIP_METRIC])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        if force:
            return {"metric": SHIP_METRIC, "passed": False, "forced": True, "reason": "no metrics"}
        raise EmbedforgeError(
            f"{where}: metrics.json has no baseline/finetuned {SHIP_METRIC}; cannot check the ship"
            f" gate (use --force to {action} anyway)"
        ) from None
    gain = tuned - base
    passed = passes(gain, min_gain)
    if not passed and not force:
        raise EmbedforgeError(
            f"{where}: fine-tuned {SHIP_METRIC} {tuned:.4f} does not beat baseline {base:.4f} by"
            f" ship.min_gain={min_gain} (gain {gain:+.4f}); refusing to {action} (use --force)"
        )
    return {
        "metric": SHIP_METRIC,
        "baseline": base,
        "finetuned": tuned,
        "gain": round(gain, 6),
        "min_gain": min_gain,
        "passed": passed,
        "forced": force and not passed,
    }
