"""Training progress and Lightning's messages, kept to what a user reads.

On a terminal Lightning's bar stays. In a log (stderr not a TTY) its bar would write hundreds of
``\\r`` frames; :class:`LogLinesProgress` replaces it with one line per 10 % of the training steps
(rate, ETA, loss), as :mod:`embedforge.progress` does for every other long stage.
:func:`quiet_lightning` drops two messages every run printed that are no use to the reader:
Lightning's "litlogger" advert and torch's ``LeafSpec`` deprecation warning raised inside
Lightning's ``_pytree`` (each by its own text; nothing else is filtered).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl

from embedforge.progress import LineReporter


class LogLinesProgress(pl.Callback):
    """``train: 30% (120/400 steps) 1.2 steps/s, ETA 0:05:00, loss 0.5321`` every ``step`` of the
    run's training batches (each batch is one optimizer step), nothing before ``delay`` seconds."""

    def __init__(self, step: float = 0.1, delay: float = 2.0) -> None:
        self.step, self.delay = step, delay
        self.reporter: LineReporter | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if not isinstance(total, int | float) or total in (float("inf"),) or total < 1:
            return
        self.reporter = LineReporter("train", "steps", int(total), self.step, self.delay)
        self.reporter.start = self.done = int(trainer.global_step)  # > 0 when resumed

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.reporter is None or not trainer.is_global_zero:
            return
        self.done += 1
        loss = trainer.callback_metrics.get("train/loss")
        self.reporter.update(self.done, f", loss {float(loss):.4f}" if loss is not None else "")


class _DropText(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_lightning() -> None:
    """Silence the "litlogger" advert and the ``LeafSpec`` deprecation warning (idempotent)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        rank_zero = logging.getLogger(name)  # whichever Lightning's rank_zero_info writes to
        if not any(isinstance(f, _DropText) for f in rank_zero.filters):
            rank_zero.addFilter(_DropText("litlogger"))
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
