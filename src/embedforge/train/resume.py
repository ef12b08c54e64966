"""Exact resume: a run continued from ``checkpoints/last.ckpt`` ends where an uninterrupted run ends.

Lightning's checkpoint restores the weights, optimizer, LR scheduler, loop counters and the
ModelCheckpoint's best score. Two things it does not restore are handled here:

- **RNG state.** Every training step reseeds ``torch``, ``numpy`` and ``random`` from
  ``(seed, global_step, rank)``, so dropout in step ``n`` is the same whether the run got there in one
  go or through a resume (the checkpoint's ``global_step`` *is* the RNG state; the torch state at
  save time is also stored in the checkpoint, for inspection).
- **Position in the epoch.** A mid-epoch checkpoint resumes at the next unseen batch of the same
  epoch's (seeded) order instead of restarting the epoch. The epoch is also handed to the batch
  sampler here (Lightning only calls ``set_epoch`` on samplers), so each epoch has its own order.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from embedforge.io import stable_hash


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of training step ``step`` on ``rank`` (fits numpy's 32 bits)."""
    return int(stable_hash(int(seed), int(step), int(rank), n=8), 16)


class ResumableTraining(pl.Callback):
    """Per-step reseeding and mid-epoch data position, so that resumed training is exact.

    Args:
        seed: the run's seed.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    @property
    def state_key(self) -> str:
        return "ResumableTraining"

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "torch_rng": torch.get_rng_state()}

    def _sampler(self, trainer: pl.Trainer) -> Any:
        sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
        return sampler if hasattr(sampler, "set_epoch") else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = self._sampler(trainer)
        if sampler is None:
            return
        # Lightning calls set_epoch on samplers, not on batch samplers: without this every epoch
        # would repeat the order of epoch 0
        sampler.set_epoch(trainer.current_epoch)
        n_batches = trainer.num_training_batches
        if (
            trainer.ckpt_path is None
            or not hasattr(sampler, "resume_at")
            or not math.isfinite(n_batches)
        ):
            return
        accum = int(trainer.accumulate_grad_batches)
        done = (trainer.global_step - trainer.current_epoch * math.ceil(n_batches / accum)) * accum
        sampler.resume_at = (trainer.current_epoch, int(min(max(done, 0), n_batches)))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (sampler := self._sampler(trainer)) is not None:
            sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        s = step_seed(self.seed, trainer.global_step, trainer.global_rank)
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAtStep`."""


class CrashAtStep(pl.Callback):
    """Fault injection for resume tests: raise before optimizer step ``step`` (0-based) starts.

    Add it from the command line: ``+callbacks.crash._target_=embedforge.train.resume.CrashAtStep
    +callbacks.crash.step=5``.
    """

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash at step {trainer.global_step}")
