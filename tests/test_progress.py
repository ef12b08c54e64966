"""Progress reporting: log lines per step when not a terminal, a bar on one, silent when quiet."""

from __future__ import annotations

import logging

import pytest

from embedforge import progress


@pytest.fixture(autouse=True)
def _restore():
    yield
    progress.configure(True)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "embedforge.progress"]


def test_log_lines_every_step_with_count_rate_and_eta(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    caplog.set_level(logging.INFO, logger="embedforge.progress")
    assert list(progress.track(range(50), "encode docs", "batch", step=0.2, delay=0)) == list(
        range(50)
    )
    lines = _lines(caplog)
    assert len(lines) == 5
    assert (
        lines[0].startswith("encode docs:  20% (10/50 batch)") and "batch/s, ETA 0:00:" in lines[0]
    )
    assert lines[-1].startswith("encode docs: 100% (50/50 batch)")


def test_fast_stages_and_single_items_stay_silent(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    caplog.set_level(logging.INFO, logger="embedforge.progress")
    assert list(progress.track(range(50), "fast", delay=60)) == list(range(50))
    assert list(progress.track([7], "one", delay=0)) == [7]
    assert _lines(caplog) == []


def test_quiet_turns_it_off(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    items = list(range(10))
    assert type(progress.track(items, "x", delay=0)).__name__ == "tqdm"
    progress.configure(False)
    assert progress.track(items, "x", delay=0) is items


def test_cli_quiet_flag_configures_progress(tmp_path):
    from embedforge import cli

    assert cli.main(["--quiet", "compare", str(tmp_path / "no-runs")]) == 2
    assert not progress.is_enabled()
