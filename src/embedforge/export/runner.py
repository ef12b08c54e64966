"""``export_model``: run dir or model dir -> fp32 + int8 ONNX dirs and ``export_report.json``."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import EmbedforgeError
from embedforge.eval.metrics import DEFAULT_METRICS, HEADLINE_METRICS
from embedforge.eval.retrieval import RetrievalSet, evaluate
from embedforge.export.checks import (
    Bounds,
    dir_size_mb,
    drop_interval,
    judge,
    measure_speed,
    onnx_size_mb,
    parity,
)
from embedforge.export.eval_set import beir_eval_set, subset
from embedforge.export.fuse import fuse_graph, fused_ops
from embedforge.export.onnx_encoder import OnnxEncoder, read_prompts
from embedforge.export.onnx_export import export_onnx, write_st_layout
from embedforge.export.quantize import RECIPE_FILE, Int8Recipe, quantize_int8
from embedforge.io import write_json
from embedforge.models.store import EmbeddingStore
from embedforge.runs import load_config, load_run, run_eval_set, ship_gate

log = logging.getLogger(__name__)
REPORT = "export_report.json"
#: the variant dirs an export writes (plain and fused, fp32 and int8; the fallback int8 only when
#: no faster int8 variant meets the bounds)
FALLBACK = "int8_blockwise"
VARIANTS = ("fp32", "fp32_fused", "int8", "int8_fused", FALLBACK)
#: the int8 variants in the order the export prefers to ship them (fastest first)
SHIP_ORDER = ("int8_fused", "int8", FALLBACK)


@dataclass
class ExportSettings:
    """Everything ``export_model`` does besides choosing the model.

    Args:
        bounds: limits a variant must meet to be marked good.
        recipe: the int8 recipe.
        min_gain: ship gate for a run dir when its config has no ``ship.min_gain``.
        force: export even when the ship gate fails.
        beir: a BEIR dir to evaluate on (else the run's eval set; required for a bare model dir).
        trust: build the run's data source even if its config names targets outside embedforge
            and the libraries it configures (:func:`embedforge.config.check_trusted`).
        split: the BEIR qrels split.
        max_queries: subset size for the retrieval check (None = all).
        max_docs: corpus subset size (None = all).
        parity_texts: how many docs and how many queries (each) to compare embeddings on.
        speed: measure latency/throughput at batch 1 and 32 with 1 and 2 threads.
        fuse: also build ``fp32_fused``/``int8_fused`` (onnxruntime's transformer fusions, then
            the same int8 recipe); the fused int8 is shipped when it meets the bounds.
        fallback: the int8 recipe of ``int8_blockwise`` (on the fused graph when ``fuse``), built
            and checked only when neither ``int8_fused`` nor ``int8`` meets the bounds; it is
            more accurate and slower (docs/ship.md). None = no fallback.
        store: the PyTorch reference reads and writes its embeddings through the embedding store
            (a run's own ``embedding_store``, else ``default_store``): what the run already
            encoded with the shipped weights is not encoded again.
        default_store: the ``embedding_store`` config node used for a bare model dir (the CLI
            passes the packaged config's; None: no store).
    """

    bounds: Bounds = field(default_factory=Bounds)
    recipe: Int8Recipe = field(default_factory=Int8Recipe)
    min_gain: float = 0.01
    force: bool = False
    beir: str | None = None
    trust: bool = False
    split: str = "test"
    max_queries: int | None = 200
    max_docs: int | None = 500
    parity_texts: int = 64
    speed: bool = True
    fuse: bool = True
    fallback: Int8Recipe | None = field(
        default_factory=lambda: Int8Recipe(blockwise=[r"MatMul$"], name=FALLBACK)
    )
    store: bool = True
    default_store: Any = None


def resolve_source(source: str | Path) -> tuple[Path, Path | None]:
    """``(model_dir, run_dir or None)`` for a run dir (has ``model/``) or a model dir."""
    p = Path(source).expanduser()
    if (p / "model" / "modules.json").is_file():
        return p / "model", p
    if (p / "modules.json").is_file():
        return p, None
    raise EmbedforgeError(
        f"{p} is neither a run dir (with model/) nor a SentenceTransformer dir (with modules.json)"
    )


def _torch_encoder(model_dir: Path):
    from embedforge.models.encoder import Encoder

    prompts = read_prompts(model_dir)
    return Encoder.from_pretrained(
        str(model_dir), prompts.get("query", ""), prompts.get("document", ""), max_seq_length=None
    )


def _speed_torch(model_dir: Path, texts: list[str]) -> dict:
    import torch  # here: `embedforge export --help` stays torch-free

    enc = _torch_encoder(model_dir)
    before = torch.get_num_threads()

    def make(threads: int):
        torch.set_num_threads(threads)
        return lambda batch: enc.encode(batch, "doc", batch_size=len(batch))

    try:
        return measure_speed(make, texts)
    finally:
        torch.set_num_threads(before)


def _speed_onnx(onnx_dir: Path, texts: list[str]) -> dict:
    return measure_speed(lambda t: OnnxEncoder(onnx_dir, threads=t).embed_raw, texts)


def export_model(
    source: str | Path, out: str | Path | None = None, settings: ExportSettings | None = None
) -> dict[str, Any]:
    """Export, quantize, check and report.

    Args:
        source: a run dir (``model/``, ``metrics.json``, ``.hydra/config.yaml``) or a model dir.
        out: output dir (default ``<run>/onnx`` or ``<model_dir>-onnx``); gets ``fp32/``,
            ``int8/`` (with ``fuse``: ``fp32_fused/``, ``int8_fused/``) and
            ``export_report.json``, whose ``shipped_int8`` names the int8 variant to serve: the
            first of :data:`SHIP_ORDER` that meets the bounds (``int8_blockwise/`` is built
            only when neither of the others does). The model dir also gets ``onnx/`` in
            sentence-transformers' layout (:func:`write_st_layout`) with that int8 graph.
        settings: see ``ExportSettings``.

    Returns:
        The report (also written to ``out/export_report.json``).
    """
    s = settings or ExportSettings()
    model_dir, run_dir = resolve_source(source)
    out = (
        Path(out)
        if out
        else (run_dir / "onnx" if run_dir else model_dir.with_name(model_dir.name + "-onnx"))
    )
    report: dict[str, Any] = {"source": str(source), "model_dir": str(model_dir), "out": str(out)}
    rset = _gate_and_eval_set(model_dir, run_dir, s, report)
    report["eval_set"] = rset.summary()
    report["bounds"] = asdict(s.bounds)

    t0 = time.perf_counter()
    for sub in VARIANTS:
        shutil.rmtree(out / sub, ignore_errors=True)
    dirs = {"fp32": export_onnx(model_dir, out / "fp32")}
    t1 = time.perf_counter()
    if s.fuse:
        dirs["fp32_fused"] = fuse_graph(dirs["fp32"], out / "fp32_fused")
    t2 = time.perf_counter()
    for src in list(dirs):
        name = src.replace("fp32", "int8")
        dirs[name] = quantize_int8(dirs[src], out / name, s.recipe)
    report["seconds"] = {
        "export": round(t1 - t0, 2),
        "fuse": round(t2 - t1, 2),
        "quantize": round(time.perf_counter() - t2, 2),
    }
    texts = {
        "doc": list(rset.corpus.values())[: s.parity_texts],
        "query": list(rset.queries.values())[: s.parity_texts],
    }
    store = _embedding_store(run_dir, s) if s.store else None
    report["torch"], ref, torch_per_query = _torch_reference(model_dir, rset, texts, s.speed, store)
    variants = report["variants"] = {}

    def check(name: str) -> None:
        variants[name] = _check_variant(
            name, dirs[name], rset, texts, ref, report["torch"]["metrics"], torch_per_query, s
        )

    for name in dirs:
        check(name)
    if s.fallback is not None and not any(v["good"] for n, v in variants.items() if "int8" in n):
        t3 = time.perf_counter()
        src = dirs["fp32_fused" if s.fuse else "fp32"]
        dirs[FALLBACK] = quantize_int8(src, out / FALLBACK, s.fallback)
        report["seconds"]["quantize"] += round(time.perf_counter() - t3, 2)
        check(FALLBACK)
    report["shipped_int8"] = next(
        (n for n in SHIP_ORDER if variants.get(n, {}).get("good")),
        next(n for n in reversed(SHIP_ORDER) if n in dirs),  # none good: the most accurate
    )
    # SentenceTransformer(model_dir, backend="onnx", model_kwargs={"file_name": ...}) loads these
    report["sentence_transformers_files"] = write_st_layout(
        model_dir, dirs["fp32"], dirs[report["shipped_int8"]]
    )
    report["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    write_json(out / "export_report.json", report)
    return report


def _gate_and_eval_set(
    model_dir: Path, run_dir: Path | None, s: ExportSettings, report: dict[str, Any]
) -> RetrievalSet:
    """The (subset) eval set to check against; a run must first pass its ship gate (``report["gate"]``)."""
    rset: RetrievalSet | None = None
    if run_dir is not None:
        cfg, metrics = load_run(run_dir)
        report["gate"] = ship_gate(cfg, metrics, s.min_gain, s.force, where=str(run_dir))
        if not s.beir:
            rset = run_eval_set(cfg, run_dir / ".hydra" / "config.yaml", s.trust)
    if s.beir:
        rset = beir_eval_set(s.beir, s.split)
    if rset is None:
        raise EmbedforgeError(f"{model_dir} is a bare model dir; pass --beir DIR for the eval set")
    return subset(rset, s.max_queries, s.max_docs)


def _embedding_store(run_dir: Path | None, s: ExportSettings) -> EmbeddingStore | None:
    """The embedding store of the run's config (None if it has none), or ``s.default_store``'s for
    a bare model dir. Built from its settings, not its ``_target_``: a saved config runs no code
    here (issue 25)."""
    store = load_config(run_dir).get("embedding_store") if run_dir else s.default_store
    if not store:
        return None
    return EmbeddingStore(store.root, store.get("dtype", "float32"), store.get("max_gb", 20.0))


class EncodeOnce:
    """Wraps an encoder so that each text is encoded at most once per kind: the eval encodes the
    eval set, and the parity check's texts (a part of it) come from what it encoded."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.seen: dict[tuple[str, str], np.ndarray] = {}
        self.encoded = 0  # texts the wrapped encoder was asked for

    def encode(self, texts: list[str], kind: str, batch_size: int = 32, show_progress=False):
        new = list(dict.fromkeys(t for t in texts if (kind, t) not in self.seen))
        if new:
            emb = self.encoder.encode(new, kind, batch_size, show_progress)
            self.seen.update(((kind, t), e) for t, e in zip(new, emb))
            self.encoded += len(new)
        if not texts:
            return np.zeros((0, 0), np.float32)
        return np.stack([self.seen[(kind, t)] for t in texts])


def _torch_reference(
    model_dir: Path, rset: RetrievalSet, texts: dict[str, list[str]], speed: bool, store=None
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """The PyTorch model's size, metrics (and speed), its embeddings of ``texts`` and its
    per-query metrics (for the variants' paired intervals). With ``store`` (an embedding store)
    texts the run already encoded with these weights are read, not encoded."""
    torch_enc = _torch_encoder(model_dir)
    torch_enc.store = store
    enc = EncodeOnce(torch_enc)
    res = evaluate(enc, rset, DEFAULT_METRICS)
    ref = {kind: enc.encode(t, kind) for kind, t in texts.items()}
    info: dict[str, Any] = {
        "size_mb": dir_size_mb(model_dir),
        "metrics": res.metrics,
        "texts_encoded": enc.encoded,
    }
    if store is not None:
        info["encodes"] = store.summary()
    if speed:
        info["speed"] = _speed_torch(model_dir, texts["doc"][:32])
    return info, ref, res.per_query


def _check_variant(
    name: str,
    vdir: Path,
    rset: RetrievalSet,
    texts: dict[str, list[str]],
    ref: dict[str, np.ndarray],
    torch_metrics: dict[str, float],
    torch_per_query: dict[str, dict[str, float]],
    s: ExportSettings,
) -> dict[str, Any]:
    """One ONNX variant against the PyTorch model: size, parity, metrics with the paired bootstrap
    interval of each headline drop, speed, verdict (:func:`embedforge.export.checks.judge`)."""
    onnx = EncodeOnce(OnnxEncoder(vdir))
    res = evaluate(onnx, rset, DEFAULT_METRICS)
    emb = np.concatenate([onnx.encode(texts["doc"], "doc"), onnx.encode(texts["query"], "query")])
    v: dict[str, Any] = {
        "path": str(vdir),
        "size_mb": onnx_size_mb(vdir),
        "parity": parity(np.concatenate([ref["doc"], ref["query"]]), emb),
        "metrics": res.metrics,
        "texts_encoded": onnx.encoded,
        "drop_ci": {m: drop_interval(torch_per_query, res.per_query, m) for m in HEADLINE_METRICS},
    }
    if (vdir / RECIPE_FILE).is_file():
        v["recipe"] = json.loads((vdir / RECIPE_FILE).read_text())
    v["fused_ops"] = fused_ops(vdir)  # None for a plain graph
    v["delta_vs_torch"] = {k: round(v["metrics"][k] - torch_metrics[k], 6) for k in torch_metrics}
    if s.speed:
        v["speed"] = _speed_onnx(vdir, texts["doc"][:32])
    v["failed"] = judge(v, torch_metrics, s.bounds)
    v["good"] = not v["failed"]
    return v
