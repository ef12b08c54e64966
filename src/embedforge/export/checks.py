"""What a variant must prove before it is marked good: parity, retrieval quality, and its speed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.eval.metrics import HEADLINE_METRICS
from embedforge.eval.significance import ALPHA, paired_delta


@dataclass
class Bounds:
    """Limits for a variant relative to the torch model (drops are absolute, e.g. 0.01 = 1 point).

    Args:
        max_ndcg_drop: largest allowed NDCG@10 drop.
        max_recall_drop: largest allowed Recall@5 drop.
        min_mean_cosine: smallest allowed mean cosine(torch, variant) over the parity texts.
        min_min_cosine: smallest allowed worst-case cosine (0 disables the check).
    """

    max_ndcg_drop: float = 0.01
    max_recall_drop: float = 0.01
    min_mean_cosine: float = 0.98
    min_min_cosine: float = 0.0


#: confidence level of the interval on a metric drop (:mod:`embedforge.eval.significance`)
CI_LEVEL = 1 - ALPHA


def drop_interval(
    reference: dict[str, dict[str, float]],
    variant: dict[str, dict[str, float]],
    metric: str,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap interval of the mean drop (reference - variant) of ``metric``.

    Both models answered the same queries: the interval is
    :func:`embedforge.eval.significance.paired_delta`'s (resampled per-query differences).

    Args:
        reference, variant: per-query metrics ``{qid: {metric: value}}`` (``EvalResult.per_query``).

    Returns:
        ``{"drop", "lo", "hi", "n_queries"}``: the point drop and the ``CI_LEVEL`` interval.
    """
    qids = sorted(set(reference) & set(variant))
    if not qids:
        raise ValueError("no common queries to compare")
    rec = paired_delta(
        [variant[q][metric] for q in qids], [reference[q][metric] for q in qids], seed=seed
    )
    return {
        "drop": round(rec["delta"], 6),
        "lo": round(rec["low"], 6),
        "hi": round(rec["high"], 6),
        "n_queries": rec["n"],
    }


def parity(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Row-wise cosine between two ``(N, D)`` embedding matrices: min, mean and max abs diff."""
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    b = other / np.linalg.norm(other, axis=1, keepdims=True).clip(1e-12)
    cos = (a * b).sum(1)
    return {
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(reference - other).max()),
        "n_texts": int(len(cos)),
    }


def judge(
    variant: dict[str, Any], reference_metrics: dict[str, float] | None, bounds: Bounds
) -> list[str]:
    """The bounds ``variant`` ({"parity": ..., "metrics": ..., "drop_ci": ...}) fails; empty = good.

    A metric drop above its bound fails unless ``variant["drop_ci"][metric]`` (a
    :func:`drop_interval`) says the drop is indistinguishable from zero on this eval set (its
    interval reaches 0): then the subset cannot tell the variant from the reference. A drop whose
    interval lies above zero and whose point exceeds the bound fails. Cosine bounds are points.
    """
    failed = []
    par = variant.get("parity") or {}
    if par.get("mean_cosine", 1.0) < bounds.min_mean_cosine:
        failed.append(f"mean cosine {par['mean_cosine']:.4f} < {bounds.min_mean_cosine}")
    if bounds.min_min_cosine and par.get("min_cosine", 1.0) < bounds.min_min_cosine:
        failed.append(f"min cosine {par['min_cosine']:.4f} < {bounds.min_min_cosine}")
    mets = variant.get("metrics") or {}
    if reference_metrics and mets:
        for key, bound in zip(HEADLINE_METRICS, (bounds.max_ndcg_drop, bounds.max_recall_drop)):
            drop = reference_metrics[key] - mets[key]
            if drop <= bound + 1e-9:
                continue
            ci = (variant.get("drop_ci") or {}).get(key)
            if ci is None:
                failed.append(f"{key} drop {drop:.4f} > {bound}")
            elif ci["lo"] > 0:
                failed.append(
                    f"{key} drop {drop:.4f} > {bound} ({CI_LEVEL:.0%} CI [{ci['lo']:.4f}, {ci['hi']:.4f}]"
                    " excludes 0)"
                )
    return failed


def dir_size_mb(path: str | Path) -> float:
    """Size on disk of every file under ``path`` in MB (10^6 bytes)."""
    total = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return round(total / 1e6, 2)


def onnx_size_mb(path: str | Path) -> float:
    """Size of the graph file(s) only (``*.onnx`` and external data)."""
    files = [
        f for f in Path(path).iterdir() if f.suffix == ".onnx" or f.name.endswith(".onnx_data")
    ]
    return round(sum(f.stat().st_size for f in files) / 1e6, 2)


def measure_speed(
    make_encode: Callable[[int], Callable[[Sequence[str]], Any]],
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 32),
    threads: Sequence[int] = (1, 2),
    min_texts: int = 32,
) -> dict[str, dict[str, float]]:
    """Latency per call and throughput for each (batch size, threads).

    Args:
        make_encode: ``threads -> fn(batch_texts)``; builds an encoder limited to that many threads.
        texts: real texts; each setting encodes at least ``min_texts`` of them (cycled).
    """
    out = {}
    threads = [t for t in threads if t <= (os.cpu_count() or 1)]
    for t in threads:
        fn = make_encode(t)
        fn(list(texts[:2]))  # warm-up: session init, allocator
        for bs in batch_sizes:
            n_calls = max(1, -(-min_texts // bs))
            batches = [
                [texts[(i * bs + j) % len(texts)] for j in range(bs)] for i in range(n_calls)
            ]
            lat = []
            for b in batches:
                t0 = time.perf_counter()
                fn(b)
                lat.append(time.perf_counter() - t0)
            out[f"batch{bs}_threads{t}"] = {
                "latency_ms_p50": round(1000 * float(np.median(lat)), 2),
                "latency_ms_mean": round(1000 * float(np.mean(lat)), 2),
                "texts_per_s": round(bs * len(lat) / sum(lat), 2),
                "n_texts": bs * len(lat),
            }
    return out
