"""eval.backend=onnx: the fp32 export encodes the eval set only after parity on its own texts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from omegaconf import OmegaConf

from embedforge.eval.retrieval import evaluate
from embedforge.export import eval_backend
from embedforge.export.checks import Bounds
from embedforge.export.eval_backend import eval_encoder
from embedforge.export.onnx_encoder import OnnxEncoder
from embedforge.models.encoder import Encoder


@pytest.fixture(scope="module")
def encoder(tiny_dir) -> Encoder:
    """The torch encoder ``tiny_fp32`` was exported from."""
    return Encoder.from_pretrained(str(tiny_dir), max_seq_length=None)


def test_torch_backend_is_the_encoder_itself(encoder, legal_small):
    used, record = eval_encoder(encoder, legal_small, "torch")
    assert used is encoder and record == {"requested": "torch", "used": "torch"}


def test_onnx_is_used_after_parity_and_scores_like_torch(encoder, legal_small):
    used, record = eval_encoder(encoder, legal_small, "onnx", n_texts=16)  # a real export
    assert isinstance(used, OnnxEncoder)
    assert record["used"] == "onnx" and record["fallback"] is None
    assert record["parity"]["n_texts"] == 32 and record["parity"]["min_cosine"] > 0.999
    ref = evaluate(encoder, legal_small, show_progress=False).metrics
    got = evaluate(used, legal_small, show_progress=False).metrics
    assert got == pytest.approx(ref, abs=1e-3)


@pytest.fixture
def exported(monkeypatch, tiny_fp32):
    """Skip the export: ``_export`` returns the session's ONNX dir of the same weights."""
    monkeypatch.setattr(eval_backend, "_export", lambda enc: OnnxEncoder(tiny_fp32))


def test_falls_back_to_torch_when_parity_fails(encoder, legal_small, exported, caplog):
    strict = Bounds(min_mean_cosine=1.01)  # no embedding can pass
    with caplog.at_level(logging.WARNING, logger=eval_backend.__name__):
        used, record = eval_encoder(encoder, legal_small, "onnx", bounds=strict, n_texts=8)
    assert used is encoder and record["used"] == "torch" and record["requested"] == "onnx"
    assert "parity on 16 eval texts failed: mean cosine" in record["fallback"]
    assert record["bounds"]["min_mean_cosine"] == 1.01
    assert "evaluating with torch" in caplog.text


def test_falls_back_when_the_session_is_wrong(encoder, legal_small, exported, monkeypatch):
    def garbage(self, texts, kind, batch_size=64, show_progress=True):
        return np.random.default_rng(0).normal(size=(len(texts), self.dim)).astype(np.float32)

    monkeypatch.setattr(OnnxEncoder, "encode", garbage)
    used, record = eval_encoder(encoder, legal_small, "onnx", n_texts=8)
    assert used is encoder and "mean cosine" in record["fallback"]


def test_falls_back_when_the_export_fails(encoder, legal_small, monkeypatch):
    def broken(enc):
        raise RuntimeError("no optimum here")

    monkeypatch.setattr(eval_backend, "_export", broken)
    used, record = eval_encoder(encoder, legal_small, "onnx")
    assert used is encoder and record["fallback"].startswith("ONNX export failed: RuntimeError")


def test_pipeline_evaluate_records_the_backend(encoder, legal_small, exported):
    from embedforge.pipeline import evaluate as pipeline_evaluate

    cfg = OmegaConf.create(
        {"eval": {"metrics": ["ndcg@10"], "batch_size": 16, "empty_queries": "zero"}}
    )
    assert pipeline_evaluate(cfg, encoder, legal_small).backend["used"] == "torch"
    cfg.eval.backend = "onnx"
    result = pipeline_evaluate(cfg, encoder, legal_small)
    assert result.backend["used"] == "onnx" and result.backend["parity"]["min_cosine"] > 0.999


def test_report_names_the_backend_and_its_fallback():
    from embedforge.report import _backend
    from embedforge.runs import RunMetrics

    m = RunMetrics(
        eval_backend={
            "baseline": {"requested": "onnx", "used": "onnx"},
            "finetuned": {"requested": "onnx", "used": "torch", "fallback": "parity failed"},
        }
    )
    assert _backend(m) == (
        "; baseline encoded with onnx; finetuned fell back to torch: parity failed"
    )
    assert _backend(RunMetrics(eval_backend={"finetuned": {"requested": "torch"}})) == ""


def test_onnx_bucketed_encode_keeps_input_order(tiny_fp32, real_texts):
    enc = OnnxEncoder(tiny_fp32)
    got = enc.encode(real_texts, "doc", batch_size=4, show_progress=False)
    alone = np.concatenate([enc.embed_raw(["passage: " + t])[0] for t in real_texts])
    np.testing.assert_allclose(got, alone, atol=1e-5)
    assert enc.encode([], "query").shape == (0, enc.dim)


def test_falls_back_for_an_encoder_off_the_cpu(encoder, legal_small, monkeypatch):
    import torch

    monkeypatch.setattr(Encoder, "device", property(lambda self: torch.device("meta")))
    used, record = eval_encoder(encoder, legal_small, "onnx")
    assert used is encoder and "CPU-only" in record["fallback"]
