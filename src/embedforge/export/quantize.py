"""Dynamic int8 quantization of an exported graph, with the knobs that decide its accuracy."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedforge.export.onnx_export import MODEL_FILE
from embedforge.io import write_json

RECIPE_FILE = "int8_recipe.json"


@dataclass
class Int8Recipe:
    """How to quantize: dynamic (activations scaled per batch at run time), weights to int8.

    The defaults (s8 weights, per channel, full range, every MatMul with a weight; embedding
    tables fp32) are the fastest recipe within the export bounds in ``scripts/bench_export.py`` on
    all-MiniLM-L6-v2 / legal-summarization (docs/ship.md). Matmuls of two activations (attention
    Q.K^T, A.V) stay fp32 in any case: onnxruntime's dynamic mode only quantizes constant-B MatMuls.

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
        name: a label for reports.
    """

    per_channel: bool = True
    reduce_range: bool = False
    weight_type: str = "qint8"
    op_types: list[str] = field(default_factory=lambda: ["MatMul", "Attention"])
    exclude: list[str] = field(default_factory=list)
    weight_symmetric: bool | None = None
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
    quantize_dynamic(
        str(src),
        str(out_dir / MODEL_FILE),
        op_types_to_quantize=list(recipe.op_types),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=QuantType.QInt8 if recipe.weight_type == "qint8" else QuantType.QUInt8,
        nodes_to_exclude=excluded_nodes(src, list(recipe.exclude)),
        extra_options=extra,
    )
    write_json(out_dir / RECIPE_FILE, asdict(recipe))
    return out_dir
