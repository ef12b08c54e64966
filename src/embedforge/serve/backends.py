"""Model backends for the server: raw texts in (prefixes already applied), embeddings out."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedforge.buckets import CALL_COST_TOKENS, length_buckets, measure_call_cost
from embedforge.errors import EmbedforgeError
from embedforge.export.onnx_encoder import OnnxEncoder, read_prompts

log = logging.getLogger("embedforge.serve")
REPORT = "export_report.json"  # written by export.runner (not imported: it pulls in evaluation)


class Backend(Protocol):
    prompts: dict[str, str]
    dim: int
    max_tokens: int  # longer inputs are truncated to this many tokens (specials included)
    call_cost: int  # a call's fixed cost in tokens of work: how finely a batch is length-bucketed

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(N, D)`` float32 normalized embeddings and each text's token count."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's token count without truncation (specials included); safe to call from any
        thread, at the same time as ``embed``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids of this model's tokenizer (special tokens dropped); any thread."""
        ...

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to ``vocab_size - 1``."""
        ...


def _count(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    ids = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


class TorchBackend:
    """A SentenceTransformer dir run with torch (the saved pooling/normalize modules)."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        import torch

        from embedforge.models.encoder import Encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = Encoder.from_pretrained(str(model_dir), max_seq_length=None).eval()
        # counting and decoding use a copy set up once and never changed: the model thread's
        # tokenizer switches truncation per call, which fails any other thread using it at that
        # moment ("Already borrowed")
        self._reader = copy.deepcopy(self.encoder.model.tokenizer)
        self._reader.backend_tokenizer.no_truncation()
        self._reader.backend_tokenizer.no_padding()
        self.prompts = read_prompts(model_dir)
        self.dim = self.encoder.dim
        self.max_tokens = self.encoder.max_seq_length
        self.call_cost = CALL_COST_TOKENS

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """One tokenization, then one forward per length bucket (each cut to its longest)."""
        import torch

        with torch.inference_mode():
            feats = self.encoder.tokenize(texts)
            lengths = feats["attention_mask"].sum(1).cpu().numpy()
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            for idx in length_buckets(lengths, self.call_cost):
                rows, width = torch.as_tensor(idx), int(lengths[idx].max())
                part = {
                    k: v[rows, :width] if isinstance(v, torch.Tensor) and v.dim() == 2 else v
                    for k, v in feats.items()
                }
                out[idx] = self.encoder(part).float().cpu().numpy()
        return out, lengths

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        return _count(self._reader, texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self._reader.decode(list(ids), skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return len(self._reader)


class OnnxBackend:
    """An exported ONNX dir (``model.onnx`` with pooling + normalize inside) on onnxruntime."""

    def __init__(self, model_dir: str | Path, threads: int = 0):
        # no spinning: between calls the event loop (parsing, batching, JSON) needs these cores
        self.encoder = OnnxEncoder(model_dir, threads=threads, spin=False)
        self.prompts = self.encoder.prompts
        self.dim = self.encoder.dim
        self.max_tokens = self.encoder.max_seq_length

    @property
    def call_cost(self) -> int:
        return self.encoder.call_cost

    @call_cost.setter
    def call_cost(self, tokens: int) -> None:
        self.encoder.call_cost = tokens

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder.embed_raw(texts)

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.count_tokens(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoder.decode(ids)

    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size


def calibrate(backend: Backend) -> int:
    """Measure ``backend``'s fixed cost per call on this machine and set its ``call_cost``.

    The cost differs by two orders of magnitude between backends and machines: on 2 CPU cores
    torch fp32 MiniLM pays ~75 tokens of work per call (a call of a few tokens takes ~22 ms),
    int8 ONNX ~20. With one fixed guess a batch of 32 short queries ran as 9 torch calls, 1.4x
    slower than the 3 calls the measured cost gives.
    """
    try:
        backend.call_cost = measure_call_cost(backend.embed, backend.count_tokens)
    except Exception as e:  # noqa: BLE001 - a timing aid must never keep the server from starting
        log.warning("could not time the model (%s); keeping call cost %d", e, backend.call_cost)
    return backend.call_cost


def check_export_report(onnx_dir: Path, force: bool = False) -> None:
    """Refuse a variant that the export report (``../export_report.json``) marks ``good: false``.

    Raises:
        EmbedforgeError: the variant failed its quality bounds and ``force`` is off.
    """
    report_path = onnx_dir.parent / REPORT
    if not report_path.is_file():
        return
    variant = (json.loads(report_path.read_text()).get("variants") or {}).get(onnx_dir.name)
    if variant is None or variant.get("good", True) or force:
        return
    failed = "; ".join(variant.get("failed") or []) or "see the report"
    raise EmbedforgeError(
        f"{onnx_dir.name} variant failed its quality bounds in {report_path} ({failed});"
        " serve another variant, or pass --force to serve it anyway"
    )


def _shipped_int8(export_dir: Path) -> Path:
    """The int8 variant an export dir ships (``shipped_int8`` of its report; else ``int8/``)."""
    report = export_dir / REPORT
    name = json.loads(report.read_text()).get("shipped_int8") if report.is_file() else None
    return export_dir / (name or "int8")


def load_backend(
    model: str | Path, backend: str = "torch", threads: int = 0, force: bool = False
) -> Backend:
    """``torch``: a SentenceTransformer dir (or a run dir's ``model/``); ``onnx``: an ONNX dir
    (or an export dir / run dir, whose shipped int8 variant is used: ``int8_fused`` when the export
    report's ``shipped_int8`` says so, else ``int8``). An ONNX variant whose export
    report says ``good: false`` is refused unless ``force``."""
    p = Path(model).expanduser()
    if backend == "torch":
        if (p / "model" / "modules.json").is_file():
            p = p / "model"
        if not (p / "modules.json").is_file():
            raise EmbedforgeError(f"not a SentenceTransformer dir (no modules.json): {p}")
        return TorchBackend(p, threads or None)
    if backend == "onnx":
        for cand in (p, _shipped_int8(p), _shipped_int8(p / "onnx")):
            if (cand / "model.onnx").is_file():
                check_export_report(cand.resolve(), force)
                return OnnxBackend(cand, threads)
        raise EmbedforgeError(f"no model.onnx in {p} (nor in its int8/ or onnx/int8/)")
    raise EmbedforgeError(f"unknown backend {backend!r}; use torch or onnx")
