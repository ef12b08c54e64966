"""Progress on long stages: a bar on a terminal, a log line every N % otherwise, nothing when quiet.

Every long loop (corpus/query encoding, mining, ingestion, export checks) iterates through
:func:`track`. On a terminal it is a tqdm bar with count, rate and ETA that appears only when the
stage takes longer than ``delay`` seconds; in a log (not a TTY) it writes one line per ``step`` of
the total, also only after ``delay`` seconds, so fast stages stay silent. ``embedforge --quiet`` and
the config key ``progress: false`` turn both off (:func:`configure`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("embedforge.progress")
_enabled = True


def configure(enabled: bool) -> None:
    """Turn progress reporting on or off for this process."""
    global _enabled
    _enabled = bool(enabled)


def is_enabled() -> bool:
    """Whether :func:`track` reports anything."""
    return _enabled


def track(
    items: Iterable[T],
    desc: str,
    unit: str = "it",
    total: int | None = None,
    step: float = 0.1,
    delay: float = 2.0,
) -> Iterable[T]:
    """``items``, reporting progress when enabled and there is more than one item.

    Args:
        items: what the loop runs over.
        desc: the stage, e.g. ``"encode docs"``.
        unit: what one item is (``"batch"``, ``"file"``).
        total: number of items (default: ``len(items)``).
        step: fraction of the total between two log lines when stderr is not a terminal.
        delay: seconds before anything is shown.
    """
    if total is None and isinstance(items, Sized):
        total = len(items)
    if not _enabled or not total or total <= 1:
        return items
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit=unit, total=total, leave=False, delay=delay)
    return _log_lines(items, desc, unit, total, step, delay)


class LineReporter:
    """One log line each time ``done`` crosses another ``step`` of ``total`` (and at the end), with
    rate and ETA, none before ``delay`` seconds: what :func:`track` and the training progress
    (:class:`embedforge.train.log_progress.LogLinesProgress`) write when stderr is not a terminal."""

    def __init__(
        self, desc: str, unit: str, total: int, step: float = 0.1, delay: float = 2.0
    ) -> None:
        self.desc, self.unit, self.total, self.delay = desc, unit, total, delay
        self.every = max(1, round(total * step))
        self.t0 = time.perf_counter()
        self.start = 0  # ``done`` when counting began (a resumed run starts part-way)
        self.logged = False

    def update(self, done: int, extra: str = "") -> None:
        """Report ``done`` of ``total`` if it completes a step; ``extra`` ends the line."""
        if done % self.every and done != self.total:
            return
        elapsed = time.perf_counter() - self.t0
        if elapsed < self.delay and not self.logged:
            return
        rate = (done - self.start) / elapsed if elapsed > 0 else float("inf")
        eta = (self.total - done) / rate if rate > 0 else 0.0
        log.info(
            "%s: %3d%% (%d/%d %s) %.1f %s/s, ETA %s%s",
            self.desc, 100 * done // self.total, done, self.total, self.unit, rate, self.unit,
            _hms(eta), extra,
        )  # fmt: skip
        self.logged = True


def _log_lines(
    items: Iterable[T], desc: str, unit: str, total: int, step: float, delay: float
) -> Iterator[T]:
    reporter = LineReporter(desc, unit, total, step, delay)
    for done, item in enumerate(items, 1):
        yield item
        reporter.update(done)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
