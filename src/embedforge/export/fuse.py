"""Graph fusion: onnxruntime's transformer optimizer on an exported BERT-style graph.

Fusing before quantization matters for int8: dynamic quantization rewrites each weight MatMul into
MatMulInteger + scale ops, after which onnxruntime can no longer fuse the attention block at load
time; quantizing the fused graph gives one ``QAttention`` per layer (Q, K and V in one int8 GEMM).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.export.onnx_export import MODEL_FILE
from embedforge.io import write_json

log = logging.getLogger(__name__)
FUSION_FILE = "fusion.json"
#: 1 = onnxruntime's basic graph optimizations (constant folding, redundant nodes) before the
#: Python fusions: portable across CPUs (99 would bake in this machine's layout). At opt_level 0 the
#: attention and embedding fusions do not match the optimum export (measured on MiniLM: 0 of 6).
OPT_LEVEL = 1


def bert_shape(config_path: str | Path) -> tuple[int, int]:
    """``(num_heads, hidden_size)`` from a Hugging Face ``config.json``."""
    p = Path(config_path)
    if not p.is_file():
        raise EmbedforgeError(f"{p} missing: fusion needs the model's num_heads and hidden_size")
    cfg = json.loads(p.read_text())
    try:
        return int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
    except KeyError as e:
        raise EmbedforgeError(f"{p} has no {e.args[0]}: cannot fuse this architecture") from None


def fuse_graph(fp32_dir: str | Path, out_dir: str | Path, opt_level: int = OPT_LEVEL) -> Path:
    """Write the fused graph of ``fp32_dir/model.onnx`` to ``out_dir`` with the dir's other files.

    Attention, embedding + LayerNorm, SkipLayerNorm and bias + GELU are fused where their patterns
    match (``model_type="bert"``, for CPU). ``out_dir/fusion.json`` records the count of each fused
    op, so a fusion that silently stopped matching shows up in the export report.

    Returns:
        ``out_dir``.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    fp32_dir, out_dir = Path(fp32_dir).resolve(), Path(out_dir).resolve()
    num_heads, hidden = bert_shape(fp32_dir / "config.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in fp32_dir.iterdir():
        if f.is_file() and f.suffix != ".onnx" and not f.name.endswith(".onnx_data"):
            shutil.copy2(f, out_dir / f.name)
    # onnxruntime's symbolic shape inference saves "sym_shape_infer_temp.onnx" into the working
    # directory when it gives up (it does on graphs with pooling attached): keep that out of the
    # user's directory
    with (
        tempfile.TemporaryDirectory() as scratch,
        contextlib.chdir(scratch),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        model = optimize_model(
            str(fp32_dir / MODEL_FILE),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden,
            opt_level=opt_level,
            use_gpu=False,
        )
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    model.save_model_to_file(str(out_dir / MODEL_FILE))
    write_json(out_dir / FUSION_FILE, {"opt_level": opt_level, "fused_ops": fused})
    log.info("fused %s: %s", fp32_dir, fused)
    return out_dir


def fused_ops(onnx_dir: str | Path) -> dict[str, int] | None:
    """The fused-op counts recorded for a fused dir (None for a plain graph)."""
    p = Path(onnx_dir) / FUSION_FILE
    return json.loads(p.read_text())["fused_ops"] if p.is_file() else None
