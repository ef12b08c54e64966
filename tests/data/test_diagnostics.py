"""Pair diagnostics: per-source counts, query length / lexical overlap statistics, PNG, markdown."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.data.diagnostics import diagnostics_markdown, lexical_overlap, pair_diagnostics

PAIRS = [
    {
        "query": "termination notice period",
        "positive": "Either party may give notice of termination.",
        "source": "real",
    },
    {
        "query": "who pays the fees",
        "positive": "The customer pays all fees within 30 days.",
        "source": "real",
    },
    {
        "query": "governing law",
        "positive": "This agreement is governed by the law of Delaware.",
        "source": "synthetic",
    },
    {"query": "Notice", "positive": "Notice must be written.", "source": "offline"},
    {
        "query": "insurance coverage amount required",
        "positive": "Vendor keeps insurance.",
        "source": "offline",
    },
    {
        "query": "audit rights",
        "positive": "Licensor may audit the books once a year.",
        "source": "offline",
    },
]


def test_lexical_overlap():
    assert lexical_overlap("termination notice period", "notice of TERMINATION") == pytest.approx(
        2 / 3
    )
    assert lexical_overlap("Notice notice", "notice") == 1.0  # distinct words, case-insensitive
    assert lexical_overlap("", "anything") == 0.0
    assert lexical_overlap("fees", "no match here") == 0.0


def test_counts_stats_and_png(tmp_path):
    d = pair_diagnostics(PAIRS, tmp_path)
    assert d["n_pairs"] == 6
    assert d["counts"] == {"offline": 3, "real": 2, "synthetic": 1}
    real_len = [3, 4]
    assert d["query_words"]["real"]["mean"] == pytest.approx(np.mean(real_len))
    assert d["query_words"]["offline"]["p50"] == pytest.approx(2.0)  # lengths 1, 4, 2
    off = [lexical_overlap(p["query"], p["positive"]) for p in PAIRS if p["source"] == "offline"]
    assert off == pytest.approx([1.0, 0.25, 0.5])
    assert d["overlap"]["offline"]["mean"] == pytest.approx(np.mean(off), abs=1e-3)
    assert d["overlap"]["offline"]["p10"] == pytest.approx(np.percentile(off, 10), abs=1e-3)
    assert d["overlap"]["offline"]["p90"] == pytest.approx(np.percentile(off, 90), abs=1e-3)
    png = tmp_path / "pair_diagnostics.png"
    assert (
        d["plot"] == str(png)
        and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        and png.stat().st_size > 5000
    )
    md = diagnostics_markdown(d)
    assert (
        "| real | 2 |" in md
        and "| offline | 3 |" in md
        and "![pair diagnostics](pair_diagnostics.png)" in md
    )


def test_no_output_dir_and_missing_source():
    d = pair_diagnostics([{"query": "a b", "positive": "a"}], None)
    assert d["counts"] == {"unknown": 1} and d["plot"] is None
    assert d["overlap"]["unknown"]["mean"] == pytest.approx(0.5)
    empty = pair_diagnostics([], None)
    assert empty["counts"] == {} and "(none)" in diagnostics_markdown(empty)
