"""The ship metric and gate: a fine-tuned model that does not beat its baseline is not shipped.

The pipeline records the verdict in ``metrics.json`` (``ship``); export refuses a run that fails it.
A gain whose paired test is not significant is "within noise" (said, and refused with
``ship.require_significant``).
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


def verdict(
    gain: float,
    min_gain: float,
    significance: Mapping[str, Any] | None = None,
    require_significant: bool = False,
) -> dict[str, Any]:
    """The gate's verdict on a ``SHIP_METRIC`` gain and its :func:`~embedforge.eval.significance.paired_delta`.

    Returns:
        ``{"min_gain", "require_significant", "within_noise", "passed"}``: ``within_noise`` when the
        paired test is not significant (None without a test); ``passed`` when the gain clears
        ``min_gain`` and, with ``require_significant``, is significant.
    """
    within_noise = None if not significance else not bool(significance.get("significant"))
    passed = passes(gain, min_gain) and not (require_significant and within_noise is not False)
    return {
        "min_gain": min_gain,
        "require_significant": require_significant,
        "within_noise": within_noise,
        "passed": passed,
    }


def check_quality_gate(
    baseline: Mapping[str, float] | None,
    finetuned: Mapping[str, float] | None,
    min_gain: float,
    force: bool = False,
    where: str = "run",
    action: str = "export",
    significance: Mapping[str, Any] | None = None,
    require_significant: bool = False,
    on: str = "eval",
) -> dict[str, Any]:
    """Check fine-tuned minus baseline ``SHIP_METRIC`` >= ``min_gain`` (and significant, with
    ``require_significant``); raise unless ``force``.

    Args:
        baseline: the base model's metrics (``metrics.json`` ``baseline``).
        finetuned: the shipped model's metrics (``metrics.json`` ``finetuned``).
        min_gain: the required absolute gain (``ship.min_gain``).
        force: export anyway; the returned record says the gate was overridden.
        where: the run's path, for the error message.
        action: what is refused (``export``, ``push``), for the error message.
        significance: the ``SHIP_METRIC`` record of ``metrics.json`` ``significance``, or None.
        require_significant: ``ship.require_significant``: a gain within noise fails.
        on: which queries the metrics are of: ``eval`` or ``judged`` (``embedforge judge``).

    Returns:
        ``{"metric", "on", "baseline", "finetuned", "gain", "min_gain", "require_significant",
        "within_noise", "passed", "forced"}``.
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
    v = verdict(gain, min_gain, significance, require_significant)
    if not v["passed"] and not force:
        if passes(gain, min_gain):
            raise EmbedforgeError(
                f"{where}: {on} {SHIP_METRIC} gain {gain:+.4f} is within noise (paired test p ="
                f" {(significance or {}).get('p_value', float('nan')):.3g}) and"
                f" ship.require_significant=true; refusing to {action} (use --force)"
            )
        raise EmbedforgeError(
            f"{where}: fine-tuned {SHIP_METRIC} {tuned:.4f} does not beat baseline {base:.4f} by"
            f" ship.min_gain={min_gain} on the {on} queries (gain {gain:+.4f}); refusing to"
            f" {action} (use --force)"
        )
    return {
        "metric": SHIP_METRIC,
        "on": on,
        "baseline": base,
        "finetuned": tuned,
        "gain": round(gain, 6),
        **v,
        "forced": force and not v["passed"],
    }
