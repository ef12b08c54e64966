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
