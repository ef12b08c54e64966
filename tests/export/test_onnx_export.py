import numpy as np
import onnx
import pytest

from embedforge.export.checks import parity
from embedforge.export.onnx_encoder import OnnxEncoder
from embedforge.export.onnx_export import OUTPUT_NAME, export_onnx
from embedforge.models.encoder import Encoder


@pytest.fixture(scope="module")
def tiny_onnx(tiny_fp32):
    return tiny_fp32


def test_graph_contains_pooling_and_normalization(tiny_onnx):
    graph = onnx.load(str(tiny_onnx / "model.onnx")).graph
    assert OUTPUT_NAME in [o.name for o in graph.output]
    names = [n.name for n in graph.node]
    assert any(n.startswith("/1/") for n in names), "pooling module (ST module 1) missing"
    assert any(n.startswith("/2/") for n in names), "normalize module (ST module 2) missing"


def test_fp32_equals_torch_on_real_texts(tiny_dir, tiny_onnx, real_texts):
    torch_enc = Encoder.from_pretrained(str(tiny_dir), "query: ", "passage: ", max_seq_length=None)
    onnx_enc = OnnxEncoder(tiny_onnx)
    assert onnx_enc.max_seq_length == torch_enc.max_seq_length
    for kind in ("query", "doc"):
        ref = torch_enc.encode(real_texts, kind, batch_size=8)
        got = onnx_enc.encode(real_texts, kind, batch_size=8)  # padded batches of mixed lengths
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert parity(ref, got)["min_cosine"] >= 0.999


def test_prompts_travel_with_the_onnx_dir(tiny_onnx, real_texts):
    enc = OnnxEncoder(tiny_onnx)
    assert (enc.query_prefix, enc.doc_prefix) == ("query: ", "passage: ")
    q = enc.encode(real_texts[:4], "query")
    raw, _ = enc.embed_raw(["query: " + t for t in real_texts[:4]])
    np.testing.assert_allclose(q, raw, atol=1e-5)
    assert not np.allclose(q, enc.encode(real_texts[:4], "doc"), atol=1e-3)


def test_not_a_model_dir_is_a_clear_error(tmp_path):
    from embedforge.errors import EmbedforgeError

    with pytest.raises(EmbedforgeError, match="modules.json"):
        export_onnx(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_minilm_fp32_equals_torch(tmp_path, real_texts):
    enc = Encoder.from_pretrained("packaged:all-MiniLM-L6-v2")
    model_dir = enc.save(tmp_path / "model")
    onnx_enc = OnnxEncoder(export_onnx(model_dir, tmp_path / "fp32"))
    texts = real_texts[:8] + real_texts[-8:]
    assert parity(enc.encode(texts, "doc"), onnx_enc.encode(texts, "doc"))["min_cosine"] >= 0.999
