"""Encoder: prefixes, normalization, saving a SentenceTransformer dir that keeps its prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedforge.buckets import padded_tokens, token_batches
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


# ------------------------------------------------------------------ token-length bucketing
def _texts() -> list[str]:
    words = "the licensee shall indemnify the licensor against all third party claims".split()
    rng = np.random.default_rng(0)
    # lengths from 1 word to past the tiny model's 64-token limit (truncated), in shuffled order
    return [" ".join(rng.choice(words, size=n)) for n in rng.permutation(list(range(1, 70, 2)))]


def test_bucketed_encode_equals_each_text_alone_in_input_order(tiny_encoder):
    texts = _texts()
    got = tiny_encoder.encode(texts, "doc", batch_size=4, show_progress=False)
    tiny_encoder.eval()
    with torch.no_grad():
        alone = np.concatenate([tiny_encoder.embed([t], "doc").numpy() for t in texts])
    assert got.shape == (len(texts), tiny_encoder.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, alone, atol=1e-5)  # no padding at all vs bucketed padding
    one_batch = tiny_encoder.encode(texts, "doc", batch_size=len(texts), show_progress=False)
    np.testing.assert_allclose(got, one_batch, atol=1e-5)


def test_encode_streams_tokenization_and_pads_each_batch_to_its_longest(tiny_encoder, monkeypatch):
    """No tokenized corpus is held: token counts are taken a chunk at a time and each batch is
    tokenized when it is encoded (issue 24: the whole corpus padded to its longest text was
    ``N x max_len`` int64 tensors x 3, 1.2 GB at 200k passages of 256 tokens)."""
    texts = _texts()
    lengths = tiny_encoder.tokenize(texts)["attention_mask"].sum(1).numpy()
    calls, shapes = [], []
    preprocess, forward = tiny_encoder.model.preprocess, tiny_encoder.forward
    monkeypatch.setattr(
        tiny_encoder.model, "preprocess", lambda t: calls.append(len(t)) or preprocess(t)
    )
    monkeypatch.setattr(
        tiny_encoder,
        "forward",
        lambda f: shapes.append(tuple(f["input_ids"].shape)) or forward(f),
    )
    reference = tiny_encoder.encode(texts, "doc", batch_size=4, show_progress=False)
    calls.clear(), shapes.clear()
    out = tiny_encoder.encode_uncached(texts, "doc", 4, False, length_chunk=3)
    np.testing.assert_array_equal(out, reference)
    n_chunks = -(-len(texts) // 3)
    assert calls[:n_chunks] == [3] * (len(texts) // 3) + [len(texts) % 3] * (len(texts) % 3 > 0)
    assert calls[n_chunks:] == [b for b, _ in shapes]  # each batch tokenized on its own
    budget = 4 * tiny_encoder.max_seq_length
    assert all(b * w <= budget or b == 1 for b, w in shapes)
    # padded tokens = what token-sorted batches cost, far below padding all to the longest
    assert sum(b * w for b, w in shapes) == padded_tokens(lengths, token_batches(lengths, 4, 64))
    assert sum(b * w for b, w in shapes) < 1.1 * lengths.sum()


def test_encode_empty_input(tiny_encoder):
    out = tiny_encoder.encode([], "query", show_progress=False)
    assert out.shape == (0, tiny_encoder.dim) and out.dtype == np.float32


def test_token_batches_cover_every_index_once_under_the_budget():
    lengths = np.array([5, 64, 3, 3, 40, 12, 64, 1, 0, 20])
    batches = token_batches(lengths, batch_size=2, max_length=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert lengths[flat].tolist() == sorted(lengths.tolist(), reverse=True)  # longest first
    assert all(len(b) * max(lengths[b].max(), 1) <= 128 for b in batches)
    assert token_batches([], 8, 16) == []
    # similar short texts share big batches; mixed lengths are not padded to the longest
    assert [len(b) for b in token_batches([8] * 100, batch_size=4, max_length=64)] == [32] * 3 + [4]
    mixed = token_batches([16] + [4] * 20, batch_size=2, max_length=64)
    assert [len(b) for b in mixed] == [2, 19]  # the budget alone would put 8 texts with the 16
    assert padded_tokens(lengths, [np.array([1, 4]), np.array([2, 3])]) == 2 * 64 + 2 * 3
