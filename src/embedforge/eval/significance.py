"""Uncertainty of a baseline-vs-fine-tuned delta: paired bootstrap interval, paired test, power.

Both models are scored on the same queries, so every statistic here is *paired over queries*: the
unit resampled (bootstrap) or sign-flipped (randomization test) is one query's
``finetuned - baseline`` difference. This is the setting of Smucker, Allan & Carterette (CIKM 2007,
"A comparison of statistical significance tests for IR evaluation"), which recommends the paired
randomization test used here.

Implementation: SciPy's ``scipy.stats.bootstrap`` (percentile interval over resampled queries) and
``scipy.stats.permutation_test`` (``permutation_type="samples"`` on the one sample of differences:
each query's sign flipped, the paired randomization test), seeded, so a rerun gives the same numbers. ranx's statistical tests would do the same but pull in
numba/llvmlite, ir_datasets, fastparquet and seaborn, and recompute the metrics from run files; the
per-query metrics (``per_query.jsonl``, trec_eval semantics) already exist here (docs/judge.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

#: two-sided level of every interval and test
ALPHA = 0.05
#: bootstrap resamples and randomization-test permutations
N_RESAMPLES = 10_000
#: power of the "how many more queries" estimate
POWER = 0.8


def paired_delta(
    baseline: Sequence[float],
    finetuned: Sequence[float],
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """The mean ``finetuned - baseline`` over paired queries, its bootstrap CI and a paired test.

    Args:
        baseline / finetuned: one value per query, in the same query order.
        seed: seeds the bootstrap and the permutations (same inputs + seed -> same numbers).
        n_resamples: bootstrap resamples and randomization-test permutations.
        alpha: two-sided level: a ``1 - alpha`` interval, significant when ``p < alpha``.

    Returns:
        ``{"delta", "low", "high", "p_value", "significant", "n", "std"}``: ``low``/``high`` bound
        the percentile bootstrap interval of the mean delta; ``p_value`` is the two-sided paired
        randomization test; ``std`` the sample standard deviation of the per-query deltas.
    """
    from scipy import stats

    b = np.asarray(baseline, dtype=np.float64)
    f = np.asarray(finetuned, dtype=np.float64)
    if b.shape != f.shape:
        raise ValueError(f"paired values differ in length: {b.shape} vs {f.shape}")
    n = int(b.size)
    d = f - b
    delta = float(d.mean()) if n else 0.0
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or std == 0.0:  # no spread: the interval is the point, nothing to test
        p = 1.0 if delta == 0.0 or n < 2 else 0.0
        return _record(delta, delta, delta, p, alpha, n, std)
    rng = np.random.default_rng(seed)
    # one sample of paired differences: bootstrap resamples queries (pairs kept together) and
    # the "samples" permutation of one sample flips the sign of each query's difference
    ci = stats.bootstrap(
        (d,),
        np.mean,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=1 - alpha,
        method="percentile",
        random_state=rng,
    ).confidence_interval
    test = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        random_state=rng,
        batch=2000,  # bounded memory; same permutations as unbatched
    )
    return _record(delta, float(ci.low), float(ci.high), float(test.pvalue), alpha, n, std)


def _record(
    delta: float, low: float, high: float, p: float, alpha: float, n: int, std: float
) -> dict[str, Any]:
    return {
        "delta": round(delta, 6),
        "low": round(low, 6),
        "high": round(high, 6),
        "p_value": round(p, 6),
        "significant": bool(p < alpha),
        "n": n,
        "std": round(std, 6),
    }


def queries_needed(
    delta: float, std: float, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Queries a paired test needs to find ``delta`` significant with probability ``power``.

    Normal approximation for a paired test of the mean delta: ``n = ((z_{1-alpha/2} + z_power) *
    std / delta)^2``. It assumes the per-query deltas of new queries have the observed mean and
    standard deviation (new queries resemble the judged ones), so it is a planning figure, not a
    promise. None when the delta is 0 (no number of queries makes it significant).
    """
    if delta == 0 or not math.isfinite(delta):
        return None
    if std == 0:
        return 2
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, math.ceil((z * std / abs(delta)) ** 2))


def delta_significance(
    rows: Iterable[Mapping[str, Any]], metrics: Sequence[str] | None = None, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """:func:`paired_delta` per metric from ``per_query.jsonl`` rows (those with a baseline).

    Args:
        rows: ``{"baseline": {metric: v} | None, "finetuned": {metric: v}}`` per query.
        metrics: which metrics (default: every metric of the first row).
        seed: as :func:`paired_delta`.

    Returns:
        ``{metric: paired_delta record}``; empty when no row has a baseline.
    """
    paired = [r for r in rows if r.get("baseline")]
    if not paired:
        return {}
    names = list(metrics or paired[0]["finetuned"])
    return {
        m: paired_delta(
            [float(r["baseline"][m]) for r in paired],
            [float(r["finetuned"][m]) for r in paired],
            seed=seed,
        )
        for m in names
    }


def interval_text(rec: Mapping[str, Any] | None) -> str:
    """``[+0.0123, +0.0456]`` for a :func:`paired_delta` record, ``""`` without one."""
    if not rec:
        return ""
    return f"[{rec['low']:+.4f}, {rec['high']:+.4f}]"
