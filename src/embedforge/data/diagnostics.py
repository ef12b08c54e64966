"""Training-pair diagnostics: counts, query lengths and query-positive lexical overlap per source.

Lexical overlap is the fraction of a query's distinct word tokens (lower-cased ``\\w+``) that occur
in its positive: 1.0 means every query word is copied from the passage (easy, keyword-like pairs);
low values mean paraphrased queries. Comparing the distributions of ``real`` and generated pairs
shows whether the generator writes queries that look like the users' ones.
"""

from __future__ import annotations

import importlib.util
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

_TOKEN = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def lexical_overlap(query: str, positive: str) -> float:
    """Fraction of the query's distinct word tokens that also occur in ``positive`` (0 if none)."""
    q = set(_tokens(query))
    if not q:
        return 0.0
    return len(q & set(_tokens(positive))) / len(q)


def _stats(values: list[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return {
        "mean": round(float(x.mean()), 3),
        "p10": round(float(p10), 3),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
    }


def pair_diagnostics(pairs: list[dict], out_dir: str | Path | None = None) -> dict[str, Any]:
    """Per-source statistics of training pairs, plus a histogram PNG in ``out_dir``.

    Args:
        pairs: ``{"query", "positive", "source"?}`` dicts (missing source counts as ``unknown``).
        out_dir: where ``pair_diagnostics.png`` is written (no plot when None, no pairs or no
            matplotlib).

    Returns:
        ``{"n_pairs", "counts": {source: n}, "query_words": {source: {mean,p10,p50,p90}},
        "overlap": {source: {...}}, "plot": path | None}``.
    """
    lengths: dict[str, list[float]] = defaultdict(list)
    overlaps: dict[str, list[float]] = defaultdict(list)
    for p in pairs:
        source = str(p.get("source") or "unknown")
        lengths[source].append(len(p["query"].split()))
        overlaps[source].append(lexical_overlap(p["query"], p["positive"]))
    sources = sorted(lengths)
    result: dict[str, Any] = {
        "n_pairs": len(pairs),
        "counts": {s: len(lengths[s]) for s in sources},
        "query_words": {s: _stats(lengths[s]) for s in sources},
        "overlap": {s: _stats(overlaps[s]) for s in sources},
        "plot": None,
    }
    # the histogram needs matplotlib (the bench extra); the statistics do not
    if out_dir is not None and pairs and importlib.util.find_spec("matplotlib") is not None:
        result["plot"] = str(
            _plot(sources, lengths, overlaps, Path(out_dir) / "pair_diagnostics.png")
        )
    return result


def _plot(sources, lengths, overlaps, path: Path) -> Path:
    from embedforge.plots import pyplot, save_figure

    plt = pyplot()
    fig, (ax_len, ax_ovl) = plt.subplots(1, 2, figsize=(10, 3.8))
    max_len = max(max(v) for v in lengths.values())
    len_bins = np.arange(0, max_len + 2) if max_len <= 60 else 40
    for s in sources:
        n = len(lengths[s])
        kw = {"alpha": 0.5, "weights": np.full(n, 1 / n), "label": f"{s} (n={n})"}
        ax_len.hist(lengths[s], bins=len_bins, **kw)
        ax_ovl.hist(overlaps[s], bins=np.linspace(0, 1, 21), **kw)
    ax_len.set(title="query length", xlabel="words", ylabel="fraction of the source's pairs")
    ax_ovl.set(title="query-positive lexical overlap", xlabel="fraction of query words in positive")
    ax_ovl.legend(fontsize=8)
    return save_figure(fig, path)


def diagnostics_markdown(d: dict[str, Any]) -> str:
    """A markdown section (table + image link) for ``report.md``."""
    lines = [
        "### Training pairs",
        "",
        "| source | pairs | query words mean (p10/p50/p90) | lexical overlap mean (p10/p50/p90) |",
        "|---|---:|---|---|",
    ]
    for s, n in d["counts"].items():
        ql, ov = d["query_words"][s], d["overlap"][s]
        lines.append(
            f"| {s} | {n} | {ql['mean']:.1f} ({ql['p10']:.0f}/{ql['p50']:.0f}/{ql['p90']:.0f}) |"
            f" {ov['mean']:.2f} ({ov['p10']:.2f}/{ov['p50']:.2f}/{ov['p90']:.2f}) |"
        )
    if not d["counts"]:
        lines.append("| (none) | 0 | | |")
    lines += ["", "Lexical overlap = fraction of a query's distinct words found in its positive."]
    if d.get("plot"):
        lines += ["", f"![pair diagnostics]({Path(d['plot']).name})"]
    return "\n".join(lines) + "\n"
