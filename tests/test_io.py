"""File helpers: atomic writes honour the umask (they were 0600, PNGs beside them 0644)."""

from __future__ import annotations

import os
import stat

import pytest

from embedforge.io import atomic_write_text, write_json, write_jsonl


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_of_any_new_file(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [
            atomic_write_text(tmp_path / "report.md", "# run\n"),
            write_json(tmp_path / "metrics.json", {"a": 1}),
            write_jsonl(tmp_path / "pairs.jsonl", [{"query": "q", "positive": "p"}]),
        ]
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [mode] * 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
