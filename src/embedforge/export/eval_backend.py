"""The encoder evaluation runs with: the torch model, or its fp32 ONNX export after a parity check.

``eval.backend=onnx`` exports the encoder as it is now (base or fine-tuned weights) to a temporary
ONNX graph and uses it for the eval set only when its embeddings of a sample of that eval set's own
texts agree with torch within the export parity bounds (:class:`embedforge.export.checks.Bounds`);
otherwise the run falls back to torch with a warning. Either way the returned record says what was
used and why, for ``metrics.json`` and the report. In-training validation stays on torch: its
weights change between validations, and an export per validation costs more than it saves.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.eval.retrieval import EVAL_BACKENDS, RetrievalSet
from embedforge.export.checks import Bounds, judge, parity
from embedforge.models.encoder import Encoder

log = logging.getLogger(__name__)

#: texts per kind (documents, queries) the parity check encodes with both backends
PARITY_TEXTS = 64


def _sample(texts: list[str], n: int) -> list[str]:
    """``n`` texts spread evenly over ``texts`` (all of them when fewer)."""
    if len(texts) <= n:
        return texts
    return [texts[int(i)] for i in np.linspace(0, len(texts) - 1, n)]


def eval_encoder(
    encoder: Encoder,
    rset: RetrievalSet,
    backend: str = "torch",
    bounds: Bounds | None = None,
    n_texts: int = PARITY_TEXTS,
    batch_size: int = 64,
) -> tuple[Any, dict[str, Any]]:
    """The encoder to evaluate ``rset`` with, and the record of that choice.

    Args:
        encoder: the torch encoder (its current weights are what is exported).
        rset: the eval set; its documents and queries are the parity texts.
        backend: ``torch`` or ``onnx`` (``eval.backend``).
        bounds: the parity bounds (default: the export's).
        n_texts: documents and queries each in the parity sample.
        batch_size: encoding batch size of the parity check.

    Returns:
        ``(encoder, record)``: ``encoder`` has ``encode(texts, kind, batch_size, show_progress)``;
        ``record`` is ``{"requested", "used"}`` plus, for onnx, ``"parity"``, ``"bounds"`` and
        ``"fallback"`` (why torch was used instead, or None).
    """
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"eval.backend must be one of {list(EVAL_BACKENDS)}, got {backend!r}")
    record: dict[str, Any] = {"requested": backend, "used": "torch"}
    if backend == "torch":
        return encoder, record
    bounds = bounds or Bounds()
    record.update(parity=None, bounds=asdict(bounds), fallback=None)
    if encoder.device.type != "cpu":  # onnxruntime's CPU provider would be slower than the GPU
        record["fallback"] = f"the encoder runs on {encoder.device.type}; the ONNX path is CPU-only"
        log.warning("eval.backend=onnx: %s; evaluating with torch", record["fallback"])
        return encoder, record
    try:
        onnx_enc = _export(encoder)
        texts = {
            "doc": _sample(list(rset.corpus.values()), n_texts),
            "query": _sample(list(rset.queries.values()), n_texts),
        }
        ref = np.concatenate([encoder.encode(t, k, batch_size, False) for k, t in texts.items()])
        got = np.concatenate([onnx_enc.encode(t, k, batch_size, False) for k, t in texts.items()])
    except Exception as e:  # noqa: BLE001 - any export/runtime failure means: evaluate with torch
        record["fallback"] = (
            f"ONNX export failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        )
        log.warning("eval.backend=onnx: %s; evaluating with torch", record["fallback"])
        return encoder, record
    record["parity"] = parity(ref, got)
    failed = judge({"parity": record["parity"]}, None, bounds)
    if failed:
        record["fallback"] = f"parity on {len(ref)} eval texts failed: {'; '.join(failed)}"
        log.warning("eval.backend=onnx: %s; evaluating with torch", record["fallback"])
        return encoder, record
    record["used"] = "onnx"
    log.info(
        "eval.backend=onnx: parity on %d eval texts, mean cosine %.6f",
        len(ref),
        record["parity"]["mean_cosine"],
    )
    return onnx_enc, record


def _export(encoder: Encoder):
    """``encoder``'s current weights as an :class:`OnnxEncoder` (files in a temporary dir, which
    is removed once onnxruntime has loaded the graph)."""
    import torch

    from embedforge.export.onnx_encoder import OnnxEncoder
    from embedforge.export.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="embedforge-eval-onnx-") as tmp:
        model_dir = encoder.save(Path(tmp) / "model")
        onnx_dir = export_onnx(model_dir, Path(tmp) / "onnx")
        return OnnxEncoder(onnx_dir, threads=torch.get_num_threads())
