"""Truncated-embedding evaluation: one encoding for every dimension, equal to loading the saved
model with sentence-transformers' ``truncate_dim`` (what docs/extending.md tells users)."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.errors import EmbedforgeError
from embedforge.eval.matryoshka import TruncatedEncoder, evaluate_dims
from embedforge.eval.retrieval import RetrievalSet, evaluate

TEXTS = ["termination notice clause", "payment terms of the lease", "warranty of the landlord"]


def test_truncated_encoder_equals_sentence_transformers_truncate_dim(tiny_encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    tiny_encoder.save(tmp_path / "model")
    st = SentenceTransformer(str(tmp_path / "model"), truncate_dim=8, device="cpu")
    want = st.encode(TEXTS, prompt_name="document", normalize_embeddings=True)
    got = TruncatedEncoder(tiny_encoder, 8).encode(TEXTS, "doc", show_progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.shape == (3, 8)


def test_evaluate_dims_encodes_once_and_matches_full_evaluation(tiny_encoder):
    calls = []

    class Counting:
        def encode(self, texts, kind, batch_size=64, show_progress=True):
            calls.append(kind)
            return tiny_encoder.encode(texts, kind, batch_size, show_progress)

    rset = RetrievalSet(
        {f"d{i}": t for i, t in enumerate(TEXTS)},
        {f"q{i}": t.split()[0] for i, t in enumerate(TEXTS)},
        {f"q{i}": {f"d{i}": 1} for i in range(3)},
    )
    out = evaluate_dims(Counting(), rset, [32, 4], ["ndcg@10"])
    assert sorted(calls) == ["doc", "query"]  # both dimensions from one encoding
    full = evaluate(tiny_encoder, rset, ["ndcg@10"], show_progress=False).metrics["ndcg@10"]
    assert out["32"]["ndcg@10"] == pytest.approx(full, abs=1e-6)
    with pytest.raises(EmbedforgeError, match="eval.matryoshka_dims: 64 exceeds .* 32"):
        evaluate_dims(tiny_encoder, rset, [64])
