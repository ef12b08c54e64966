"""Encoder: prefixes, normalization, saving a SentenceTransformer dir that keeps its prompts."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.errors import EmbedforgeError
from embedforge.models.encoder import Encoder


def test_tiny_is_deterministic_and_normalized():
    a, b = Encoder.tiny(seed=3), Encoder.tiny(seed=3)
    x = a.encode(["a contract clause", "hello"], "doc")
    assert np.allclose(x, b.encode(["a contract clause", "hello"], "doc"))
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_prefixes_are_applied_and_saved(tmp_path):
    enc = Encoder.tiny(seed=0, query_prefix="query: ", doc_prefix="passage: ")
    assert enc.prefixed(["x"], "query") == ["query: x"] and enc.prefixed(["x"], "doc") == [
        "passage: x"
    ]
    q = enc.encode(["find the clause"], "query")
    raw = enc.model.encode(["query: find the clause"], normalize_embeddings=False)
    assert np.allclose(q, raw, atol=1e-5)
    enc.save(tmp_path / "m")
    again = Encoder.from_pretrained(str(tmp_path / "m"), max_seq_length=64)
    assert (again.query_prefix, again.doc_prefix) == ("query: ", "passage: ")
    assert np.allclose(again.encode(["find the clause"], "query"), q, atol=1e-5)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert np.allclose(st.encode_query(["find the clause"]), q, atol=1e-5)


def test_embed_has_gradients_and_encode_restores_mode(tiny_encoder):
    tiny_encoder.train()
    e = tiny_encoder.embed(["a", "b"], "query")
    assert e.requires_grad and e.shape == (2, tiny_encoder.dim)
    tiny_encoder.encode(["a"], "doc")
    assert tiny_encoder.training
    tiny_encoder.eval()
    tiny_encoder.encode(["a"], "doc")
    assert not tiny_encoder.training


def test_missing_local_model_dir_and_unknown_packaged():
    with pytest.raises(EmbedforgeError, match="model directory not found"):
        Encoder.from_pretrained("./no/such/model")
    with pytest.raises(EmbedforgeError, match="unknown packaged model"):
        Encoder.from_pretrained("packaged:nope")
