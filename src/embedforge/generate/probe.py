"""The strategy probe behind ``generator.strategies=auto``: let the base model say which offline
pairs are worth training on.

A pair the base model already solves teaches it nothing (validation on such pairs rises while the
real task falls); a pair it cannot solve at all is likely noise. For every candidate strategy the
probe builds ``pairs`` pairs from a seeded sample of the chunks, searches each query among the
positives of that strategy's sample with the base model, and records MRR@10. The chosen strategies
are the hardest (lowest MRR) whose MRR lies in ``mrr_band``, at most ``max_strategies``; when none
lies in the band, the one closest to it. Cost: two encodings of ``pairs`` short texts per strategy.

The band's numbers are relative to a ``pairs``-document search: with 100 candidates a random
ranking scores ~0.05 MRR@10, so a strategy near 1.0 is copy-easy and one near 0.05 is noise.
"""

from __future__ import annotations

import random
from typing import Any

from embedforge.errors import EmbedforgeError
from embedforge.types import Chunk

DEFAULTS: dict[str, Any] = {
    "pairs": 100,
    "mrr_band": [0.3, 0.85],
    "max_strategies": 2,
    "min_pairs": 30,
    "model": "packaged:all-MiniLM-L6-v2",
    "batch_size": 64,
}


def probe_config(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` over :data:`DEFAULTS`, checked (``generator.probe.*``)."""
    cfg = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    cfg.pop("candidates", None)
    lo, hi = (float(x) for x in cfg["mrr_band"])
    if not 0.0 <= lo < hi <= 1.0:
        raise EmbedforgeError(
            f"generator.probe.mrr_band must be [lo, hi] with 0 <= lo < hi <= 1, got {cfg['mrr_band']}"
        )
    if int(cfg["pairs"]) < 10 or int(cfg["max_strategies"]) < 1 or int(cfg["min_pairs"]) < 10:
        raise EmbedforgeError(
            "generator.probe.pairs and generator.probe.min_pairs must be >= 10 and"
            " generator.probe.max_strategies >= 1,"
            f" got {cfg['pairs']}, {cfg['min_pairs']} and {cfg['max_strategies']}"
        )
    cfg["mrr_band"] = [lo, hi]
    return cfg


def probe_strategies(generator: Any, chunks: list[Chunk]) -> tuple[list[str], list[dict]]:
    """(chosen strategies, the table: one row per candidate) for an ``OfflineGenerator``.

    Uses ``generator.encoder`` (set by the pipeline to the run's base model), else loads
    ``probe.model`` and keeps it on the generator.
    """
    from embedforge.eval.retrieval import RetrievalSet, evaluate

    cfg = probe_config(generator.probe_settings)
    n = int(cfg["pairs"])
    if generator.encoder is None:
        from embedforge.models.encoder import Encoder

        generator.encoder = Encoder.from_pretrained(str(cfg["model"]))
    # strategies fire on a fraction of documents (headings, informative titles): sample generously
    sample = chunks
    if len(chunks) > 5 * n:
        sample = random.Random(f"{generator.seed}:probe").sample(chunks, 5 * n)
    lo, hi = cfg["mrr_band"]
    table: list[dict[str, Any]] = []
    cached = _Memo(
        generator.encoder
    )  # strategies share positives (the whole document): encode once
    for s in generator.strategies:
        pairs = generator._generate(sample, [s])[:n]
        row: dict[str, Any] = {"strategy": s, "pairs": len(pairs), "mrr@10": None}
        docs = sorted({p["positive"] for p in pairs})
        if len(pairs) >= int(cfg["min_pairs"]) and len(docs) >= 10:
            doc_id = {t: f"d{i}" for i, t in enumerate(docs)}
            rset = RetrievalSet(
                corpus={i: t for t, i in doc_id.items()},
                queries={f"q{k}": p["query"] for k, p in enumerate(pairs)},
                qrels={f"q{k}": {doc_id[p["positive"]]: 1} for k, p in enumerate(pairs)},
                name=f"probe/{s}",
            )
            r = evaluate(
                cached,
                rset,
                ["mrr@10", "recall@1"],
                int(cfg["batch_size"]),
                show_progress=False,
            )
            row.update({k: round(float(v), 4) for k, v in r.metrics.items()})
        table.append(row)
    # a strategy that fires on few documents would give few training pairs
    scored = [r for r in table if r["mrr@10"] is not None and r["pairs"] >= int(cfg["min_pairs"])]
    if not scored:
        raise EmbedforgeError(
            f"generator.strategies=auto: no candidate strategy gave {cfg['min_pairs']} probe pairs"
            " from this corpus (generator.probe.min_pairs);"
            f" candidates {generator.strategies} (generator.probe.candidates)"
        )
    in_band = sorted((r for r in scored if lo <= r["mrr@10"] <= hi), key=lambda r: r["mrr@10"])
    if in_band:
        chosen = [r["strategy"] for r in in_band[: int(cfg["max_strategies"])]]
    else:  # the nearest to the band
        near = min(scored, key=lambda r: (max(lo - r["mrr@10"], r["mrr@10"] - hi), r["strategy"]))
        chosen = [near["strategy"]]
    for r in table:
        r["chosen"] = r["strategy"] in chosen
    return chosen, table


class _Memo:
    """``encode`` with a per-(kind, text) cache, for the probe's repeated documents."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.cache: dict[tuple[str, str], Any] = {}

    def encode(self, texts, kind, batch_size=64, show_progress=False):
        import numpy as np

        todo = list(dict.fromkeys(t for t in texts if (kind, t) not in self.cache))
        if todo:
            for t, e in zip(todo, self.encoder.encode(todo, kind, batch_size, show_progress)):
                self.cache[(kind, t)] = e
        return np.stack([self.cache[(kind, t)] for t in texts]) if texts else np.zeros((0, 1))
