"""Export a SentenceTransformer directory to one ONNX graph that returns the final embedding."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.io import write_json

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
OUTPUT_NAME = "sentence_embedding"
# Files that make an ONNX dir self-contained: max length, prompts, pooling record.
ST_FILES = ("sentence_bert_config.json", "config_sentence_transformers.json", "modules.json")
# What the ONNX side needs from the SentenceTransformer, read from the loaded model (sentence-
# transformers 5 keeps max_seq_length in tokenizer_config.json, older versions elsewhere).
META_FILE = "embedforge_onnx.json"
#: where sentence-transformers' ONNX backend looks inside a model dir: ``onnx/model.onnx`` (fp32),
#: and the name its ``export_dynamic_quantized_onnx_model`` gives qint8 per-channel weights
ST_ONNX_DIR = "onnx"
ST_INT8_FILE = "model_qint8_avx512_vnni.onnx"


def model_meta(model_dir: str | Path) -> dict:
    """``{"max_seq_length", "prompts", "dim"}`` of a SentenceTransformer dir, as loaded."""
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = SentenceTransformer(str(model_dir), device="cpu")
        dim = st.get_sentence_embedding_dimension()
    prompts = {k: v or "" for k, v in (st.prompts or {}).items()}
    return {"max_seq_length": int(st.max_seq_length), "prompts": prompts, "dim": dim}


def export_onnx(model_dir: str | Path, out_dir: str | Path, opset: int | None = None) -> Path:
    """Export ``model_dir`` to ``out_dir/model.onnx`` with pooling and normalization inside.

    optimum's ``sentence_transformers`` library path traces the whole SentenceTransformer
    (Transformer -> Pooling -> Normalize), so the ``sentence_embedding`` output equals
    ``SentenceTransformer.encode`` (the plain ``feature-extraction`` export and
    sentence-transformers' own ONNX backend stop at ``last_hidden_state``/token embeddings).

    Args:
        model_dir: a SentenceTransformer directory (e.g. written by ``Encoder.save``).
        out_dir: where to write ``model.onnx``, the tokenizer files and the ST config files.
        opset: ONNX opset; optimum's default for the architecture when None.

    Returns:
        The output directory.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "modules.json").is_file():
        raise EmbedforgeError(f"not a SentenceTransformer directory (no modules.json): {model_dir}")
    from optimum.exporters.onnx import main_export

    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(
            str(model_dir),
            output=str(out_dir),
            task="feature-extraction",
            library_name="sentence_transformers",
            opset=opset,
            do_validation=False,  # we validate ourselves, on real texts, against the torch model
            device="cpu",
        )
    for name in ST_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    write_json(out_dir / META_FILE, model_meta(model_dir))
    if not (out_dir / MODEL_FILE).is_file():
        raise EmbedforgeError(f"ONNX export wrote no {MODEL_FILE} in {out_dir}")
    return out_dir


def write_st_layout(model_dir: str | Path, fp32_dir: Path, int8_dir: Path) -> dict[str, str]:
    """Put the exported graphs where ``SentenceTransformer(model_dir, backend="onnx")`` loads them.

    ``model_dir/onnx/model.onnx`` is the fp32 graph and ``onnx/model_qint8_avx512_vnni.onnx`` the
    int8 one (pick it with ``model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"}``).
    Our graphs return the pooled ``sentence_embedding``; optimum's feature-extraction model (which
    sentence-transformers runs) reads ``last_hidden_state``, so the copies name the graph's
    ``token_embeddings`` output that way, and sentence-transformers pools it with the model dir's
    own Pooling/Normalize modules: the same embeddings.

    Returns:
        ``{"fp32": file_name, "int8": file_name}`` relative to ``model_dir``.
    """
    target = Path(model_dir) / ST_ONNX_DIR
    target.mkdir(parents=True, exist_ok=True)
    names = {"fp32": f"{ST_ONNX_DIR}/{MODEL_FILE}", "int8": f"{ST_ONNX_DIR}/{ST_INT8_FILE}"}
    for variant, src in (("fp32", fp32_dir), ("int8", int8_dir)):
        _rename_output(src / MODEL_FILE, Path(model_dir) / names[variant])
    return names


def _rename_output(
    src: Path, dst: Path, old: str = "token_embeddings", new: str = "last_hidden_state"
) -> None:
    """Copy an ONNX graph with the tensor ``old`` renamed ``new`` wherever it appears."""
    import onnx

    model = onnx.load(str(src))
    if old not in [o.name for o in model.graph.output]:
        raise EmbedforgeError(f"{src} has no {old!r} output to expose as {new!r}")
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for out in model.graph.output:
        if out.name == old:
            out.name = new
    onnx.save(model, str(dst))
