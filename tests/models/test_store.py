"""The embedding store: one encoding per (text, weights), across calls and runs; never fails a run."""

from __future__ import annotations

import logging
import os
from collections import Counter

import numpy as np
import pytest
import torch

from embedforge.models.encoder import Encoder
from embedforge.models.store import EmbeddingStore

TEXTS = [f"clause {i} on " + "terms " * (i % 7) for i in range(40)]


@pytest.fixture
def encoder():
    return Encoder.tiny(seed=0)


@pytest.fixture
def encoded(monkeypatch):
    """Every (fingerprint, text) ``encode_uncached`` really encodes, counted."""
    seen: Counter = Counter()
    real = Encoder.encode_uncached

    def spy(self, texts, kind, *args, **kwargs):
        seen.update((self.fingerprint(kind), t) for t in texts)
        return real(self, texts, kind, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode_uncached", spy)
    return seen


def test_second_request_is_served_from_the_store_and_equals_a_fresh_encoding(
    encoder, encoded, tmp_path
):
    fresh = encoder.encode(TEXTS, "doc", show_progress=False)
    encoded.clear()
    encoder.store = EmbeddingStore(tmp_path)
    first = encoder.encode(TEXTS, "doc", show_progress=False)
    mixed = encoder.encode(TEXTS[::-1] + TEXTS[:3], "doc", show_progress=False)
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(mixed, np.concatenate([fresh[::-1], fresh[:3]]))
    counts = next(iter(encoder.store.summary()["by_weights"].values()))
    assert counts["texts_encoded"] == len(TEXTS) and counts["cache_hits"] == len(TEXTS) + 3
    assert max(encoded.values()) == 1  # no text encoded twice with the same weights


def test_a_new_store_on_the_same_folder_reuses_it_the_next_run(encoder, encoded, tmp_path):
    encoder.store = EmbeddingStore(tmp_path)
    first = encoder.encode(TEXTS, "doc", show_progress=False)
    encoder.store = EmbeddingStore(tmp_path)  # the next run or sweep job
    again = encoder.encode(TEXTS, "doc", show_progress=False)
    np.testing.assert_array_equal(again, first)
    counts = next(iter(encoder.store.summary()["by_weights"].values()))
    assert counts["texts_encoded"] == 0 and counts["cache_hits"] == len(TEXTS)
    assert max(encoded.values()) == 1


def test_a_pickled_store_reopens_its_shards(encoder, encoded, tmp_path):
    import pickle

    encoder.store = EmbeddingStore(tmp_path)
    first = np.array(encoder.encode(TEXTS, "doc", show_progress=False))
    clone = pickle.loads(pickle.dumps(encoder))  # as ddp_spawn hands the module to a process
    assert len(pickle.dumps(encoder.store)) < 2000  # no embeddings in the pickle
    np.testing.assert_array_equal(clone.encode(TEXTS, "doc", show_progress=False), first)
    assert max(encoded.values()) == 1


def test_a_text_repeated_in_one_request_is_encoded_once(encoder, encoded, tmp_path):
    encoder.store = EmbeddingStore(tmp_path)
    out = encoder.encode(["same", "other", "same"], "doc", show_progress=False)
    np.testing.assert_array_equal(out[0], out[2])
    counts = next(iter(encoder.store.summary()["by_weights"].values()))
    assert counts["texts_encoded"] == 2 and counts["repeats"] == 1
    assert max(encoded.values()) == 1


def test_new_weights_kinds_and_prefixes_are_other_fingerprints(encoder, tmp_path):
    encoder.store = EmbeddingStore(tmp_path)
    doc = encoder.fingerprint("doc")
    assert encoder.fingerprint("query") == doc  # the tiny model has no prefixes
    encoder.query_prefix = "query: "
    assert encoder.fingerprint("query") != doc
    before = encoder.encode(TEXTS[:5], "doc", show_progress=False)
    with torch.no_grad():
        next(encoder.parameters()).add_(0.5)  # a training step changes the weights in place
    assert encoder.fingerprint("doc") != doc
    after = encoder.encode(TEXTS[:5], "doc", show_progress=False)
    assert not np.allclose(before, after)  # not served the old weights' embeddings
    np.testing.assert_array_equal(after, encoder.encode_uncached(TEXTS[:5], "doc", 64, False))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage_keys"])
def test_a_corrupt_shard_is_dropped_and_encoded_again(encoder, tmp_path, caplog, damage):
    encoder.store = EmbeddingStore(tmp_path)
    first = np.array(encoder.encode(TEXTS, "doc", show_progress=False))  # not a map of the file
    (emb,) = tmp_path.glob("*/*.emb.npy")
    keys = emb.with_name(emb.name.replace(".emb.", ".keys."))
    data = bytearray(emb.read_bytes())
    if damage == "truncate":
        emb.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[-10] ^= 0xFF
        emb.write_bytes(bytes(data))
    else:
        keys.write_bytes(b"not a numpy file")
    encoder.store = EmbeddingStore(tmp_path)
    with caplog.at_level(logging.WARNING):
        again = encoder.encode(TEXTS, "doc", show_progress=False)
    np.testing.assert_array_equal(again, first)
    counts = next(iter(encoder.store.summary()["by_weights"].values()))
    assert counts["corrupt_shards"] == 1 and counts["texts_encoded"] == len(TEXTS)
    assert "dropped shard" in caplog.text
    encoder.store = EmbeddingStore(tmp_path)  # the re-encoded shard replaced it
    encoder.encode(TEXTS, "doc", show_progress=False)
    counts = next(iter(encoder.store.summary()["by_weights"].values()))
    assert counts["texts_encoded"] == 0 and "corrupt_shards" not in counts


def test_an_unwritable_store_keeps_embeddings_in_memory(encoder, encoded, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder would be")
    encoder.store = EmbeddingStore(blocker / "store")
    with caplog.at_level(logging.WARNING):
        first = encoder.encode(TEXTS, "doc", show_progress=False)
        again = encoder.encode(TEXTS, "doc", show_progress=False)
    np.testing.assert_array_equal(again, first)
    assert max(encoded.values()) == 1 and "cannot write" in caplog.text


def test_float16_store_serves_what_it_stored(encoder, tmp_path):
    exact = encoder.encode(TEXTS, "doc", show_progress=False)
    encoder.store = EmbeddingStore(tmp_path, dtype="float16")
    first = encoder.encode(TEXTS, "doc", show_progress=False)
    again = encoder.encode(TEXTS, "doc", show_progress=False)
    np.testing.assert_array_equal(first, again)  # a miss and a hit give the same numbers
    np.testing.assert_allclose(first, exact, atol=2e-3)
    assert next(tmp_path.glob("*/*.emb.npy")).stat().st_size < exact.nbytes * 0.6


def test_over_max_gb_the_least_recently_used_models_are_pruned(tmp_path):
    a = Encoder.tiny(seed=0)
    b = Encoder.tiny(seed=1)
    a.store = b.store = EmbeddingStore(tmp_path)
    a.encode(TEXTS, "doc", show_progress=False)
    b.encode(TEXTS, "doc", show_progress=False)
    old, new = (tmp_path / f"{m.fingerprint('doc')}-float32" for m in (a, b))
    os.utime(old, (1, 1))  # a's embeddings were used long ago
    size = sum(f.stat().st_size for f in new.iterdir())
    EmbeddingStore(tmp_path, max_gb=1.5 * size / 1e9)
    assert list(tmp_path.iterdir()) == [new]


def test_bad_dtype_is_a_one_line_error(tmp_path):
    from embedforge.errors import EmbedforgeError

    with pytest.raises(EmbedforgeError, match="embedding_store.dtype"):
        EmbeddingStore(tmp_path, dtype="int8")


def test_a_run_encodes_each_text_once_per_weights_and_the_next_run_reuses_them(
    compose, tmp_path, encoded
):
    """Issue 24: validation-set building, baseline eval, baseline validation and mining all used
    to encode the same texts with the base model again; now the counter in metrics.json shows
    each text encoded once per set of weights, and a second run encodes nothing with them."""
    import json

    from embedforge.pipeline import train
    from tests.conftest import LEGAL

    def run(out):
        cfg = compose(
            "model=tiny",
            "trainer=debug",
            "logger=none",
            "data=beir",
            f"data.path={LEGAL}",
            "data.val_max_docs=100",
            "data.hard_negatives.num=1",
            "data.hard_negatives.margin=null",
            "trainer.max_steps=2",
            "data.batch_size=4",
            f"paths.output_dir={out}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        )
        train(cfg)
        return json.loads((out / "metrics.json").read_text())["encodes"]

    first = run(tmp_path / "a")
    assert max(encoded.values()) == 1  # no text twice with one set of weights
    by_weights = first["by_weights"]
    assert sum(c["cache_hits"] for c in by_weights.values()) > 0
    assert sum(c["texts_encoded"] for c in by_weights.values()) == len(encoded)
    assert first["dir"] == str(tmp_path / "cache" / "embeddings")
    encoded.clear()
    second = run(tmp_path / "b")["by_weights"]
    base = set(first["by_weights"]) & set(second)  # the base model's fingerprints
    assert base and all(second[f]["texts_encoded"] == 0 for f in base)
    assert all(second[f]["cache_hits"] > 0 for f in base)
