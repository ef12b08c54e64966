"""Dynamic int8 quantization of an exported graph, with the knobs that decide its accuracy."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embedforge.export.onnx_export import MODEL_FILE
from embedforge.io import write_json

RECIPE_FILE = "int8_recipe.json"


@dataclass
class Int8Recipe:
    """How to quantize: dynamic (activations scaled per batch at run time), weights to int8.

    The defaults (s8 weights, per channel, full range, every MatMul with a weight; embedding
    tables fp32) are the fastest recipe measured (docs/ship.md); it meets the export bounds on
    ICD-10, CUAD and medquad-qa, not always on legal-summarization; the export then ships the
    plain graph or, failing that, ``blockwise=["MatMul$"]`` (issue 27; per-node sweep:
    ``scripts/bench_int8_sensitivity.py``). Matmuls of two activations (attention Q.K^T, A.V)
    stay fp32 in any case: onnxruntime's dynamic mode only quantizes constant-B MatMuls.

    Args:
        per_channel: one scale per output channel of each weight matrix instead of one per tensor.
        reduce_range: 7-bit weights. On AVX2 without VNNI the u8 x s8 kernel (VPMADDUBSW) sums
            pairs into int16 and can saturate; 7 bits rule that out but cost a bit of precision
            (measured: Recall@5 -0.025 vs -0.003 with full range, no speed gain).
        weight_type: ``qint8`` or ``quint8``.
        op_types: op types to quantize (MatMul covers every linear layer; Attention the fused
            attention of a fused graph (``embedforge.export.fuse``: Q/K/V projections), absent
            from a plain graph; adding Gather quantizes the embedding tables: 59 -> 23 MB for
            MiniLM, at a small quality cost).
        exclude: regexes on node names left in fp32 (e.g. the last layer's FFN, the pooler).
        weight_symmetric: symmetric weight ranges (None = onnxruntime's default: symmetric for
            qint8, asymmetric for quint8; optimum's AVX2 config forces True).
        blockwise: regexes on node names of weight MatMuls (not excluded) that become
            ``MatMulNBits`` nodes: 8-bit weights in blocks of ``block_size`` input rows, GEMM in
            int8 (``accuracy_level`` 4) with the activations quantized at run time **per row and
            block** instead of once per tensor, so an outlier token or channel no longer coarsens
            every other value (the sweep's sensitive nodes lose ~5x less cosine), but onnxruntime's
            kernel is 1.3-1.7x slower than ``MatMulInteger`` at batch 32 and 2-3x at batch 1.
        block_size: rows per block of ``blockwise`` nodes (16 to 256, a power of 2).
        name: a label for reports.
    """

    per_channel: bool = True
    reduce_range: bool = False
    weight_type: str = "qint8"
    op_types: list[str] = field(default_factory=lambda: ["MatMul", "Attention"])
    exclude: list[str] = field(default_factory=list)
    weight_symmetric: bool | None = None
    blockwise: list[str] = field(default_factory=list)
    block_size: int = 32
    name: str = "int8"


def excluded_nodes(model_path: str | Path, patterns: list[str]) -> list[str]:
    """Names of the graph's nodes matching any of ``patterns`` (regex search)."""
    import onnx

    if not patterns:
        return []
    graph = onnx.load(str(model_path), load_external_data=False).graph
    regex = [re.compile(p) for p in patterns]
    return [n.name for n in graph.node if any(r.search(n.name) for r in regex)]


def quantize_int8(
    fp32_dir: str | Path, out_dir: str | Path, recipe: Int8Recipe | None = None
) -> Path:
    """Write ``out_dir/model.onnx`` (int8), the tokenizer/config files of ``fp32_dir`` and
    ``int8_recipe.json`` (the recipe used)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe = recipe or Int8Recipe()
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in fp32_dir.iterdir():
        if f.is_file() and f.suffix != ".onnx" and not f.name.endswith(".onnx_data"):
            shutil.copy2(f, out_dir / f.name)
    src = fp32_dir / MODEL_FILE
    import onnx

    # fused ops (com.microsoft domain) defeat onnx's type inference: their outputs are float
    extra: dict = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    if recipe.weight_symmetric is not None:
        extra["WeightSymmetric"] = recipe.weight_symmetric
    excluded = excluded_nodes(src, list(recipe.exclude))
    wanted = set(excluded_nodes(src, list(recipe.blockwise)))
    blockwise = [n for n in weight_matmuls(src, excluded) if n in wanted]
    quantize_dynamic(
        str(src),
        str(out_dir / MODEL_FILE),
        op_types_to_quantize=list(recipe.op_types),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=QuantType.QInt8 if recipe.weight_type == "qint8" else QuantType.QUInt8,
        nodes_to_exclude=excluded + blockwise,
        extra_options=extra,
    )
    if blockwise:
        model = onnx.load(str(out_dir / MODEL_FILE))
        to_matmul_nbits(model, set(blockwise), recipe.block_size)
        onnx.save(model, str(out_dir / MODEL_FILE))
    write_json(out_dir / RECIPE_FILE, asdict(recipe))
    return out_dir


def weight_matmuls(model_path: str | Path, excluded: list[str]) -> list[str]:
    """Names of the MatMul nodes whose second input is a 2-D weight (initializer), less
    ``excluded``."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer if len(i.dims) == 2}
    skip = set(excluded)
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and n.input[1] in weights and n.name not in skip
    ]


def to_matmul_nbits(model, names: set[str], block_size: int, accuracy_level: int = 4) -> None:
    """Replace the MatMul nodes ``names`` of ``model`` (in place) by ``com.microsoft.MatMulNBits``
    with 8-bit symmetric weights, one scale per output column and block of ``block_size`` rows.

    ``accuracy_level=4`` runs the GEMM in int8 with the activations quantized per row and block
    (onnxruntime's CPU kernel). Zero points are left out: 8-bit MatMulNBits then takes 128, which
    the stored ``q + 128`` encodes as symmetric.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.name not in names:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)  # (K, N)
        k, n = w.shape
        n_blocks = -(-k // block_size)
        padded = np.zeros((n_blocks * block_size, n), np.float32)
        padded[:k] = w
        blocks = padded.T.reshape(n, n_blocks, block_size)  # (N, blocks, block_size)
        scale = np.abs(blocks).max(-1) / 127.0  # (N, blocks)
        scale[scale == 0] = 1.0
        q = np.clip(np.round(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
        b_name, s_name = f"{node.name}_nbits_B", f"{node.name}_nbits_scales"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q.astype(np.uint8), b_name),
                numpy_helper.from_array(scale.reshape(-1).astype(np.float32), s_name),
            ]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], b_name, s_name],
                list(node.output),
                name=f"{node.name}_nbits",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=block_size,
                accuracy_level=accuracy_level,
            )
        )
    used = {x for nd in nodes for x in nd.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
