"""Graph fusion (onnxruntime's transformer optimizer) on the tiny BERT, and length buckets."""

import itertools
from collections import Counter

import numpy as np
import onnx
import pytest

from embedforge.buckets import length_buckets, measure_call_cost
from embedforge.errors import EmbedforgeError
from embedforge.export.fuse import fuse_graph, fused_ops
from embedforge.export.onnx_encoder import OnnxEncoder
from embedforge.export.quantize import quantize_int8


@pytest.fixture(scope="module")
def fused(tiny_fp32, tmp_path_factory):
    return fuse_graph(tiny_fp32, tmp_path_factory.mktemp("fused") / "fp32_fused")


def ops(onnx_dir) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(onnx_dir / "model.onnx")).graph.node)


def test_fusion_replaces_attention_embeddings_and_gelu(tiny_fp32, fused):
    plain, got = ops(tiny_fp32), ops(fused)
    # tiny BERT: 2 layers -> 2 Attention, 2 BiasGelu, 1 EmbedLayerNormalization. SkipLayerNorm
    # needs symbolic shape inference, which fails on the pooled sentence-transformers graph
    # (onnxruntime fuses Add + LayerNorm itself when it loads the session).
    assert got["Attention"] == 2 and got["BiasGelu"] == 2 and got["EmbedLayerNormalization"] == 1
    assert got["Softmax"] == 0 and plain["Softmax"] == 2
    assert sum(got.values()) < sum(plain.values()) / 2
    assert fused_ops(fused)["Attention"] == 2 and fused_ops(tiny_fp32) is None


def test_fused_graph_matches_the_plain_one(tiny_fp32, fused, real_texts):
    texts = real_texts[:6] + ["hi", "a b c"]  # mixed lengths: the fused attention sees padding
    a, ta = OnnxEncoder(tiny_fp32, bucket=False).embed_raw(texts)
    b, tb = OnnxEncoder(fused, bucket=False).embed_raw(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (ta == tb).all()


def test_fused_int8_quantizes_the_attention(fused, tiny_fp32, tmp_path, real_texts):
    q = ops(quantize_int8(fused, tmp_path / "int8_fused"))
    assert q["QAttention"] == 2 and q["Attention"] == 0
    ref, _ = OnnxEncoder(tiny_fp32).embed_raw(real_texts)
    got, _ = OnnxEncoder(tmp_path / "int8_fused").embed_raw(real_texts)
    assert (ref * got).sum(1).min() > 0.99


def test_fusion_needs_the_model_shape(tiny_fp32, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes((tiny_fp32 / "model.onnx").read_bytes())
    with pytest.raises(EmbedforgeError, match="config.json missing"):
        fuse_graph(src, tmp_path / "out")


def test_buckets_are_optimal_and_cover_every_text():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(3, 90, size=int(rng.integers(1, 8)))
        groups = length_buckets(lengths, call_cost=8)
        assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
        cost = sum(8 + len(g) * lengths[g].max() for g in groups)
        srt = np.sort(lengths)
        best = min(  # brute force over every cut of the sorted lengths
            sum(8 + len(p) * p.max() for p in np.split(srt, list(cuts)))
            for k in range(len(srt))
            for cuts in itertools.combinations(range(1, len(srt)), k)
        )
        assert cost == best


def test_buckets_cut_padding_of_mixed_lengths():
    lengths = np.array([5, 80, 6, 7, 85, 5] * 5)
    groups = length_buckets(lengths)
    padded = sum(len(g) * lengths[g].max() for g in groups)
    assert padded < 1.1 * lengths.sum() < len(lengths) * lengths.max() / 2
    assert len(length_buckets(np.full(32, 20))) == 1  # equal lengths: one call


def test_call_cost_is_a_calls_fixed_time_in_tokens():
    now = [0.0]

    def tokens(texts):
        return np.array([len(t.split()) + 2 for t in texts])

    def model(fixed_s, per_token_s):
        def embed(texts):
            now[0] += fixed_s + per_token_s * tokens(texts).sum()

        return embed

    clock = lambda: now[0]  # noqa: E731
    assert measure_call_cost(model(0.020, 0.0001), tokens, clock=clock) == 200  # torch-like
    assert measure_call_cost(model(0.002, 0.0001), tokens, clock=clock) == 20  # int8-like
    assert measure_call_cost(model(0.0, 0.0001), tokens, clock=clock) == 1
    lengths = np.array([10, 12, 20, 30, 45, 60] * 4)  # a costly call: fewer, more padded buckets
    assert len(length_buckets(lengths, 200)) < len(length_buckets(lengths, 20))


def test_bucketed_embeddings_equal_one_padded_batch(tiny_fp32, real_texts):
    texts = real_texts[:10] + ["hi"] * 3
    a, ta = OnnxEncoder(tiny_fp32, bucket=False).embed_raw(texts)
    b, tb = OnnxEncoder(tiny_fp32, bucket=True).embed_raw(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (ta == tb).all()


def test_fusion_writes_nothing_into_the_working_directory(tiny_fp32, tmp_path, monkeypatch):
    # onnxruntime's shape inference drops "sym_shape_infer_temp.onnx" into the cwd when it gives up
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    fuse_graph(tiny_fp32, tmp_path / "fused")
    assert list(work.iterdir()) == []
