"""Training progress off a terminal is a log line per 10 % (no ``\\r`` frames), and Lightning's
litlogger advert and the ``LeafSpec`` deprecation warning are gone (issue 26)."""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import torch

from embedforge.train.log_progress import LogLinesProgress, quiet_lightning


def test_off_a_terminal_training_logs_one_line_per_tenth(caplog):
    cb = LogLinesProgress(delay=0.0)
    trainer = SimpleNamespace(
        estimated_stepping_batches=40,
        global_step=0,
        is_global_zero=True,
        callback_metrics={"train/loss": torch.tensor(0.25)},
    )
    cb.on_train_start(trainer, None)
    with caplog.at_level(logging.INFO, logger="embedforge.progress"):
        for i in range(40):
            cb.on_train_batch_end(trainer, None, None, None, i)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and "(0/40" not in lines[0] and all("\r" not in line for line in lines)
    assert lines[0].startswith("train:  10% (4/40 steps)") and lines[-1].startswith("train: 100%")
    assert "ETA" in lines[0] and lines[0].endswith("loss 0.2500")


def test_build_trainer_off_a_terminal_uses_log_lines_not_the_bar(compose, tmp_path, monkeypatch):
    from embedforge import progress
    from embedforge.pipeline import build_trainer

    monkeypatch.setattr(progress, "_enabled", True)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    trainer = build_trainer(
        compose("trainer=debug", "logger=none", f"paths.output_dir={tmp_path}",
                "trainer.enable_progress_bar=true")
    )  # fmt: skip
    assert trainer.progress_bar_callback is None
    assert any(isinstance(c, LogLinesProgress) for c in trainer.callbacks)


def test_litlogger_advert_and_leafspec_warning_are_silenced(caplog):
    quiet_lightning()
    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: try installing [litlogger](https://pypi.org/project/litlogger/)")
        rank_zero_info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_lightning()  # re-installs its filter after simplefilter reset the list
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1
        )
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_a_real_fit_logs_from_the_first_tenth(caplog, tmp_path):
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, idx):
            loss = self.layer(batch).pow(2).mean()
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.randn(20, 2), batch_size=1)
    trainer = pl.Trainer(
        max_steps=20, callbacks=[LogLinesProgress(delay=0.0)], enable_progress_bar=False,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="embedforge.progress"):
        trainer.fit(Tiny(), data)
    lines = [r.getMessage() for r in caplog.records if r.name == "embedforge.progress"]
    assert lines[0].startswith("train:  10% (2/20 steps)") and len(lines) == 10
