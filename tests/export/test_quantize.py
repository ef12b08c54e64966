import json
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from embedforge.export.checks import onnx_size_mb
from embedforge.export.quantize import RECIPE_FILE, Int8Recipe, quantize_int8


@pytest.fixture(scope="module")
def fp32(tiny_fp32):
    return tiny_fp32


def _graph(d):
    return onnx.load(str(d / "model.onnx")).graph


def _const_b_matmuls(graph) -> list[str]:
    inits = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def test_default_recipe_quantizes_weight_matmuls_only(fp32, tmp_path):
    out = quantize_int8(fp32, tmp_path / "int8")
    before, after = _graph(fp32), _graph(out)
    ops = Counter(n.op_type for n in after.node)
    assert ops["MatMulInteger"] == len(_const_b_matmuls(before)) > 0
    # attention Q.K^T and A.V (two activations) stay fp32 MatMuls
    assert ops["MatMul"] == Counter(n.op_type for n in before.node)["MatMul"] - ops["MatMulInteger"]
    assert not _const_b_matmuls(after)
    word = next(i for i in after.initializer if "word_embeddings" in i.name)
    assert numpy_helper.to_array(word).dtype == np.float32  # embeddings fp32 by default
    recorded = json.loads((out / RECIPE_FILE).read_text())
    assert recorded["per_channel"] is True and recorded["reduce_range"] is False


def test_int8_embeddings_and_exclusions(fp32, tmp_path):
    default = quantize_int8(fp32, tmp_path / "default")
    emb = quantize_int8(fp32, tmp_path / "emb", Int8Recipe(op_types=["MatMul", "Gather"]))
    assert onnx_size_mb(emb) < onnx_size_mb(default)
    word = [i for i in _graph(emb).initializer if "word_embeddings" in i.name]
    assert any(numpy_helper.to_array(i).dtype in (np.int8, np.uint8) for i in word)

    keep = quantize_int8(fp32, tmp_path / "keep", Int8Recipe(exclude=[r"/layer\.0/"]))
    kept = _const_b_matmuls(_graph(keep))
    assert kept and all("/layer.0/" in n for n in kept)


def _single_matmul(path, w: np.ndarray) -> None:
    from onnx import TensorProto, helper

    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/layer.0/output/dense/MatMul")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_matmul_nbits_survives_an_outlier_token_that_breaks_per_tensor_int8(tmp_path):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from embedforge.export.quantize import to_matmul_nbits

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (72, 24)).astype(np.float32)  # K=72: not a multiple of the block
    x = rng.normal(0, 1, (64, 72)).astype(np.float32)
    x[0] *= 100  # one outlier token (BERT's [SEP]/punctuation in early FFN outputs)
    _single_matmul(tmp_path / "f.onnx", w)
    quantize_dynamic(
        str(tmp_path / "f.onnx"), str(tmp_path / "d.onnx"), weight_type=QuantType.QInt8
    )
    model = onnx.load(str(tmp_path / "f.onnx"))
    to_matmul_nbits(model, {"/layer.0/output/dense/MatMul"}, block_size=32)
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits"]
    assert not [i for i in model.graph.initializer if i.name == "w"]  # fp32 weight dropped
    onnx.save(model, str(tmp_path / "n.onnx"))

    def rel_err(name):
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        y, ref = sess.run(None, {"x": x})[0][1:], (x @ w)[1:]  # the other tokens
        return np.linalg.norm(y - ref) / np.linalg.norm(ref)

    assert rel_err("n.onnx") < 0.02 < 0.1 < rel_err("d.onnx")


def test_blockwise_and_excluded_nodes(fp32, tmp_path):
    recipe = Int8Recipe(
        blockwise=[r"/layer\.0/output/dense/MatMul$"], exclude=[r"/layer\.1/output/dense/MatMul$"]
    )
    out = quantize_int8(fp32, tmp_path / "mixed", recipe)
    nodes = {n.name: n for n in _graph(out).node}
    assert nodes["/0/encoder/layer.0/output/dense/MatMul_nbits"].op_type == "MatMulNBits"
    assert nodes["/0/encoder/layer.1/output/dense/MatMul"].op_type == "MatMul"  # fp32
    assert _const_b_matmuls(_graph(out)) == ["/0/encoder/layer.1/output/dense/MatMul"]
    ops = Counter(n.op_type for n in nodes.values())
    assert ops["MatMulInteger"] == len(_const_b_matmuls(_graph(fp32))) - 2
