"""A tiny finished run to judge: a BEIR corpus, the tiny model as base and a differently seeded tiny
model as the fine-tuned ``model/``, a ``metrics.json``."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config, make_beir

TOPICS = ["lease", "invoice", "privacy", "refund", "warranty", "shipping", "account", "license"]


def make_tiny_run(root: Path) -> Path:
    """``root/run``: config (model=tiny, data=beir on ``root/data``), ``model/``, ``metrics.json``."""
    from embedforge.models.encoder import Encoder
    from embedforge.runs import RunMetrics

    corpus = [
        {"_id": f"d{i}", "title": t.title(), "text": f"the {t} terms: clause {j} about the {t}"}
        for i, (t, j) in enumerate((t, j) for t in TOPICS for j in range(2))
    ]
    queries = [{"_id": f"q{i}", "text": f"what about the {t}"} for i, t in enumerate(TOPICS)]
    qrels = {"test": [(f"q{i}", f"d{2 * i}", 1) for i in range(len(TOPICS))]}
    data = make_beir(root / "data", corpus, queries, qrels)
    run = root / "run"
    cfg = compose_config("model=tiny", "data=beir", f"data.path={data}", "data.val_split=null")
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    Encoder.tiny(seed=7).save(run / "model")
    base = {"ndcg@10": 0.3, "recall@5": 0.4, "mrr@10": 0.3, "recall@100": 1.0}
    RunMetrics(
        task="tiny",
        baseline=base,
        finetuned={k: v + 0.1 if v < 1 else v for k, v in base.items()},
        delta={k: 0.1 if v < 1 else 0.0 for k, v in base.items()},
        n_queries=8,
        n_docs=16,
        selected="last",
        val={"base": 0.3, "best": 0.4, "last": 0.4},
        ship={"min_gain": 0.01, "passed": True},
        eval_set={"name": "tiny"},
        val_set={"name": "tiny/val", "n_queries": 2, "n_docs": 16},
    ).write(run / "metrics.json")
    return run


@pytest.fixture()
def tiny_run(tmp_path: Path) -> Path:
    return make_tiny_run(tmp_path)
