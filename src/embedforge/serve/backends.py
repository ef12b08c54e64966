"""Model backends for the server: raw texts in (prefixes already applied), embeddings out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from embedforge.errors import EmbedforgeError
from embedforge.export.onnx_encoder import OnnxEncoder, read_prompts


class Backend(Protocol):
    prompts: dict[str, str]
    dim: int

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(N, D)`` float32 normalized embeddings and each text's token count."""
        ...


class TorchBackend:
    """A SentenceTransformer dir run with torch (the saved pooling/normalize modules)."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        from embedforge.models.encoder import Encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = Encoder.from_pretrained(str(model_dir), max_seq_length=None).eval()
        self.prompts = read_prompts(model_dir)
        self.dim = self.encoder.dim

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        feats = self.encoder.tokenize(texts)
        emb = self.encoder(feats).float().cpu().numpy()
        return emb, feats["attention_mask"].sum(1).cpu().numpy()


class OnnxBackend:
    """An exported ONNX dir (``model.onnx`` with pooling + normalize inside) on onnxruntime."""

    def __init__(self, model_dir: str | Path, threads: int = 0):
        self.encoder = OnnxEncoder(model_dir, threads=threads)
        self.prompts = self.encoder.prompts
        self.dim = self.encoder.dim

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder.embed_raw(texts)


def load_backend(model: str | Path, backend: str = "torch", threads: int = 0) -> Backend:
    """``torch``: a SentenceTransformer dir (or a run dir's ``model/``); ``onnx``: an ONNX dir
    (or an export dir / run dir, whose ``int8`` variant is used)."""
    p = Path(model).expanduser()
    if backend == "torch":
        if (p / "model" / "modules.json").is_file():
            p = p / "model"
        if not (p / "modules.json").is_file():
            raise EmbedforgeError(f"not a SentenceTransformer dir (no modules.json): {p}")
        return TorchBackend(p, threads or None)
    if backend == "onnx":
        for cand in (p, p / "int8", p / "onnx" / "int8"):
            if (cand / "model.onnx").is_file():
                return OnnxBackend(cand, threads)
        raise EmbedforgeError(f"no model.onnx in {p} (nor in its int8/ or onnx/int8/)")
    raise EmbedforgeError(f"unknown backend {backend!r}; use torch or onnx")
