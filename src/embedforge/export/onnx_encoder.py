"""Encode with an exported ONNX graph: tokenizer + onnxruntime session, Encoder-compatible API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedforge.errors import EmbedforgeError
from embedforge.export.onnx_export import META_FILE, MODEL_FILE, OUTPUT_NAME
from embedforge.progress import track


def read_prompts(model_dir: str | Path) -> dict[str, str]:
    """The ``{"query", "document"}`` prompts a SentenceTransformer dir was saved with ({} if none)."""
    p = Path(model_dir) / "config_sentence_transformers.json"
    if not p.is_file():
        return {}
    return {k: v or "" for k, v in (json.loads(p.read_text()).get("prompts") or {}).items()}


def read_meta(onnx_dir: str | Path) -> dict:
    """The export's record of max length and prompts (written by ``export_onnx``)."""
    p = Path(onnx_dir) / META_FILE
    if not p.is_file():
        raise EmbedforgeError(f"{p} missing: export the model with scripts/export.py")
    return json.loads(p.read_text())


class OnnxEncoder:
    """An exported embedding graph with the model's tokenizer, max length and prompts.

    Args:
        model_dir: an ONNX dir written by ``export_onnx`` (or quantized from one).
        threads: onnxruntime intra-op threads (0 = onnxruntime's default).
        file_name: the graph file inside ``model_dir``.
    """

    def __init__(self, model_dir: str | Path, threads: int = 0, file_name: str = MODEL_FILE):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        path = self.model_dir / file_name
        if not path.is_file():
            raise EmbedforgeError(f"ONNX model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise EmbedforgeError(f"{path} has no {OUTPUT_NAME!r} output (outputs: {outputs})")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        meta = read_meta(self.model_dir)
        self.max_seq_length = int(meta["max_seq_length"])
        prompts = meta.get("prompts") or {}
        self.prompts = {"query": prompts.get("query", ""), "document": prompts.get("document", "")}
        self.query_prefix = prompts.get("query", "")
        self.doc_prefix = prompts.get("document", "")
        self.dim = int(self.session.get_outputs()[outputs.index(OUTPUT_NAME)].shape[-1])

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="np",
        )
        return {k: enc[k].astype(np.int64) for k in self.input_names if k in enc}

    def embed_raw(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embed texts as given (no prefix): ``(N, D)`` float32 and the token count of each text."""
        feed = self.tokenize(texts)
        (emb,) = self.session.run([OUTPUT_NAME], feed)
        return emb.astype(np.float32), feed["attention_mask"].sum(1)

    def encode(
        self, texts: Sequence[str], kind: str, batch_size: int = 64, show_progress: bool = True
    ) -> np.ndarray:
        """Same contract as ``Encoder.encode``: prefix by kind, length-sorted batches, ``(N, D)``."""
        prefix = self.query_prefix if kind == "query" else self.doc_prefix
        texts = [prefix + t for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in track(starts, f"encode {kind}s (onnx)", "batch") if show_progress else starts:
            idx = order[start : start + batch_size]
            out[idx] = self.embed_raw([texts[i] for i in idx])[0]
        return out
