"""Where an export's eval set comes from: the run's own config, or a BEIR dir; subset for speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embedforge.errors import EmbedforgeError
from embedforge.eval.retrieval import RetrievalSet
from embedforge.io import stable_hash


def load_run(run_dir: str | Path) -> tuple[Any, dict | None]:
    """``(cfg, metrics)`` of a run dir; the pipeline's loader when present, else read the files."""
    try:
        from embedforge.pipeline import load_run as pipeline_load_run

        return pipeline_load_run(run_dir)
    except ImportError:
        pass
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    cfg_path = run_dir / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(cfg_path) if cfg_path.is_file() else None
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return cfg, metrics


def run_eval_set(cfg: Any) -> RetrievalSet:
    """The eval set a run was scored on (its ``data`` node's ``eval_set()``)."""
    try:
        from embedforge.pipeline import build_eval_set

        return build_eval_set(cfg)
    except ImportError:
        pass
    import hydra.utils

    if cfg is None or "data" not in cfg:
        raise EmbedforgeError("run config has no `data` node; pass --beir DIR for the eval set")
    return hydra.utils.instantiate(cfg.data).eval_set()


def beir_eval_set(path: str | Path, split: str = "test") -> RetrievalSet:
    """A BEIR dir's ``split`` as a RetrievalSet (documents as ``title + " " + text``)."""
    from embedforge.data.beir import load_beir

    ds = load_beir(path)
    if split not in ds.qrels:
        raise EmbedforgeError(f"{path}: no qrels split {split!r} (have {ds.splits})")
    return RetrievalSet(
        corpus=ds.texts(),
        queries=ds.queries,
        qrels=ds.qrels[split],
        name=f"{Path(path).name}/{split}",
    )


def subset(rset: RetrievalSet, max_queries: int | None, max_docs: int | None) -> RetrievalSet:
    """A deterministic subset: ``max_queries`` judged queries, all their relevant docs, then other
    docs (in hash order) up to ``max_docs``. Scores on a subset are higher than on the full corpus
    (fewer distractors); compare variants on the same subset only."""
    qids = sorted((q for q in rset.qrels if q in rset.queries), key=lambda q: stable_hash(q))
    if max_queries and len(qids) > max_queries:
        qids = qids[:max_queries]
    keep = dict.fromkeys(d for q in qids for d in rset.qrels[q] if d in rset.corpus)
    for d in sorted(rset.corpus, key=lambda d: stable_hash(d)):
        if max_docs and len(keep) >= max_docs:
            break
        keep.setdefault(d)
    full = len(qids) == len(rset.qrels) and len(keep) == len(rset.corpus)
    info = dict(rset.info)
    if not full:
        info["subset"] = (
            f"{len(qids)}/{len(rset.qrels)} queries, {len(keep)}/{len(rset.corpus)} docs"
            " (all relevant docs of the kept queries + hash-ordered distractors)"
        )
    return RetrievalSet(
        corpus={d: rset.corpus[d] for d in keep},
        queries={q: rset.queries[q] for q in qids},
        qrels={q: rset.qrels[q] for q in qids},
        name=rset.name,
        info=info,
    )
