"""Encode with an exported ONNX graph: tokenizer + onnxruntime session, Encoder-compatible API.

Only ``tokenizers``, ``onnxruntime`` and ``numpy``: the ONNX serving path never imports torch or
transformers (tests/export/test_st_onnx.py proves it in a fresh interpreter).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedforge.buckets import CALL_COST_TOKENS, length_buckets, token_batches
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


def load_tokenizer(model_dir: Path):
    """The fast tokenizer (``tokenizer.json``) of an exported dir, via ``tokenizers`` alone."""
    from tokenizers import Tokenizer

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise EmbedforgeError(f"{path} missing: the ONNX dir needs the fast tokenizer file")
    return Tokenizer.from_file(str(path))


def _pad_token(model_dir: Path, tokenizer) -> tuple[str, int]:
    """(pad token, its id) from ``tokenizer_config.json`` / ``special_tokens_map.json``."""
    pad = None
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        p = model_dir / name
        if pad is None and p.is_file():
            pad = json.loads(p.read_text()).get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    pad = pad or "[PAD]"
    pad_id = tokenizer.token_to_id(pad)
    return pad, 0 if pad_id is None else int(pad_id)


class OnnxEncoder:
    """An exported embedding graph with the model's tokenizer, max length and prompts.

    Args:
        model_dir: an ONNX dir written by ``export_onnx`` (or quantized from one).
        threads: onnxruntime intra-op threads (0 = onnxruntime's default).
        file_name: the graph file inside ``model_dir``.
        bucket: ``embed_raw`` splits a batch into length buckets (:mod:`embedforge.buckets`)
            instead of padding every text to the batch's longest; ``call_cost`` (tokens of work
            per call, settable: the server measures it) sets how finely.
        spin: let idle intra-op threads busy-wait for the next call (onnxruntime's default). Off
            in the server, whose event loop needs those cores between calls.
    """

    def __init__(
        self,
        model_dir: str | Path,
        threads: int = 0,
        file_name: str = MODEL_FILE,
        bucket: bool = True,
        spin: bool = True,
    ):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        path = self.model_dir / file_name
        if not path.is_file():
            raise EmbedforgeError(f"ONNX model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.bucket = bucket
        self.call_cost = CALL_COST_TOKENS
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise EmbedforgeError(f"{path} has no {OUTPUT_NAME!r} output (outputs: {outputs})")
        meta = read_meta(self.model_dir)
        self.max_seq_length = int(meta["max_seq_length"])
        # two tokenizers, each configured once here and never changed after: the server uses them
        # from several threads at once, and a settings change while another thread encodes fails
        # that thread with "Already borrowed"
        self.tokenizer = load_tokenizer(self.model_dir)
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.no_padding()
        self._counter = load_tokenizer(self.model_dir)
        self._counter.no_truncation()
        self._counter.no_padding()
        self._pad = _pad_token(self.model_dir, self.tokenizer)
        prompts = meta.get("prompts") or {}
        self.prompts = {"query": prompts.get("query", ""), "document": prompts.get("document", "")}
        self.query_prefix = prompts.get("query", "")
        self.doc_prefix = prompts.get("document", "")
        self.dim = int(self.session.get_outputs()[outputs.index(OUTPUT_NAME)].shape[-1])

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Padded, truncated ``input_ids`` / ``attention_mask`` / ``token_type_ids`` the graph takes."""
        return self._feed(self._encode(texts))

    def _encode(self, texts: Sequence[str]) -> list:
        """Truncated, unpadded encodings."""
        return self.tokenizer.encode_batch(list(texts))

    def _feed(self, enc: list) -> dict[str, np.ndarray]:
        """The graph's inputs for ``enc``, right-padded to the longest of them."""
        width = max((len(e.ids) for e in enc), default=0)
        shape = (len(enc), width)
        ids = np.full(shape, self.pad_id, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        for i, e in enumerate(enc):
            k = len(e.ids)
            ids[i, :k], mask[i, :k], types[i, :k] = e.ids, e.attention_mask, e.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: arrays[k] for k in self.input_names if k in arrays}

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's token count without truncation (specials included)."""
        return np.array([len(e.ids) for e in self._counter.encode_batch(list(texts))])

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (special tokens dropped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to ``vocab_size - 1`` (added tokens included)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_token(self) -> str:
        return self._pad[0]

    @property
    def pad_id(self) -> int:
        return self._pad[1]

    def embed_raw(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embed texts as given (no prefix): ``(N, D)`` float32 and the token count of each text.

        With ``bucket`` on, one call per length bucket (same embeddings, less padding).
        """
        enc = self._encode(texts)
        lengths = np.array([len(e.ids) for e in enc], dtype=np.int64)
        groups = length_buckets(lengths, self.call_cost) if self.bucket else [np.arange(len(enc))]
        out = np.zeros((len(enc), self.dim), dtype=np.float32)
        for idx in groups:
            (emb,) = self.session.run([OUTPUT_NAME], self._feed([enc[i] for i in idx]))
            out[idx] = emb
        return out, lengths

    def encode(
        self, texts: Sequence[str], kind: str, batch_size: int = 64, show_progress: bool = True
    ) -> np.ndarray:
        """Same contract as ``Encoder.encode``: prefix by kind, tokenize once, token-length
        buckets (:func:`embedforge.buckets.token_batches`), ``(N, D)`` in input order."""
        prefix = self.query_prefix if kind == "query" else self.doc_prefix
        texts = [prefix + t for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        enc = self._encode(texts)  # once; each batch is padded to its own longest by _feed
        lengths = np.array([len(e.ids) for e in enc], dtype=np.int64)
        batches = token_batches(lengths, batch_size, self.max_seq_length)
        for idx in (
            track(batches, f"encode {kind} texts (onnx)", "batch") if show_progress else batches
        ):
            (emb,) = self.session.run([OUTPUT_NAME], self._feed([enc[i] for i in idx]))
            out[idx] = emb.astype(np.float32)
        return out
