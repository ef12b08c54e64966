"""The ship gate: a fine-tuned model that does not beat its baseline is not exported."""

from __future__ import annotations

from typing import Any

from embedforge.errors import EmbedforgeError

GATE_METRIC = "ndcg@10"


def check_quality_gate(
    metrics: dict[str, Any] | None, min_gain: float, force: bool = False, where: str = "run"
) -> dict[str, Any]:
    """Check fine-tuned minus baseline NDCG@10 ≥ ``min_gain``; raise unless ``force``.

    Args:
        metrics: the run's ``metrics.json`` content (``baseline``/``finetuned`` metric dicts).
        min_gain: the required absolute NDCG@10 gain (``ship.min_gain``).
        force: export anyway; the returned record says the gate was overridden.
        where: the run's path, for the error message.

    Returns:
        ``{"metric", "baseline", "finetuned", "gain", "min_gain", "passed", "forced"}``.
    """
    try:
        base = float(metrics["baseline"][GATE_METRIC])  # type: ignore[index]
        tuned = float(metrics["finetuned"][GATE_METRIC])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        if force:
            return {"metric": GATE_METRIC, "passed": False, "forced": True, "reason": "no metrics"}
        raise EmbedforgeError(
            f"{where}: metrics.json has no baseline/finetuned {GATE_METRIC}; cannot check the ship"
            " gate (use --force to export anyway)"
        ) from None
    gain = tuned - base
    passed = gain >= min_gain - 1e-12
    if not passed and not force:
        raise EmbedforgeError(
            f"{where}: fine-tuned {GATE_METRIC} {tuned:.4f} does not beat baseline {base:.4f} by"
            f" ship.min_gain={min_gain} (gain {gain:+.4f}); refusing to export (use --force)"
        )
    return {
        "metric": GATE_METRIC,
        "baseline": base,
        "finetuned": tuned,
        "gain": round(gain, 6),
        "min_gain": min_gain,
        "passed": passed,
        "forced": force and not passed,
    }
