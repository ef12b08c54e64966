"""DDP end to end in the fast suite: 2 CPU processes (gloo, ``ddp_spawn``) through Lightning.

One test on purpose: process start-up (~30 s on a shared 2-core machine) dominates, so every DDP
property the default suite checks rides on this one run. The slow ones are in test_distributed.py.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytorch_lightning as pl
import torch

from embedforge.eval.retrieval import RetrievalSet
from embedforge.models.encoder import Encoder
from embedforge.train.datamodule import PairDataModule
from embedforge.train.distributed import same_on_every_rank
from embedforge.train.module import ContrastiveModule
from tests.conftest import build_loss
from tests.train.test_gradcache import make_batch
from tests.train.test_sharded_encode import VAL


class ProbedPairs(PairDataModule):
    """Also checks, on each rank, that a value differing between ranks raises on every rank."""

    probe_dir = ""

    def setup(self, stage: str) -> None:
        rank = self.trainer.global_rank
        try:
            same_on_every_rank(f"value of rank {rank}", "probe")
        except RuntimeError as e:
            (Path(self.probe_dir) / f"rank{rank}").write_text(str(e))
        super().setup(stage)


class ValidationOnRankZero(pl.Callback):
    """As in a pipeline run (``rank0_pairs``): ranks > 0 hold no validation set of their own;
    each rank writes the validation scores it logged."""

    out_dir = ""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.global_rank > 0:
            pl_module.val_set = RetrievalSet({}, {}, {}, name="on rank 0")

    def on_validation_end(self, trainer, pl_module) -> None:
        scores = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        (Path(self.out_dir) / f"val{trainer.global_rank}.json").write_text(json.dumps(scores))


def _fit(pairs, encoder, devices: int, root: Path, probe_dir: str = "") -> ContrastiveModule:
    module = ContrastiveModule(
        copy.deepcopy(encoder),
        build_loss("mnrl"),
        functools.partial(torch.optim.SGD, lr=0.5),
        warmup_ratio=0.0,
        mini_batch_size=3,  # gradient caching, chunks that straddle query/doc groups
        gradient_clip_val=0.05,  # below the gradient norm of this batch: clipping is active
        val_set=VAL,
    )
    root.mkdir(parents=True, exist_ok=True)
    validation = ValidationOnRankZero()
    validation.out_dir = str(root)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(root),
        limit_val_batches=1,  # one IR validation at the end of the (2-step) epoch
        callbacks=[validation],
    )
    dm = ProbedPairs(pairs, batch_size=8, seed=0, has_val=True)
    dm.probe_dir = probe_dir
    trainer.fit(module, datamodule=dm)
    assert devices > 1 or trainer.global_step == 2  # (ddp_spawn leaves this trainer's counters)
    return module


def test_two_process_ddp_equals_one_process_on_the_global_batch(tmp_path):
    """2 optimizer steps with gradient caching, clipping and hard negatives on 2 ranks move the
    weights exactly as one process training on the global batches does (and every rank sees a
    value that differs between ranks as an error, so none hangs in a collective)."""
    torch.set_num_threads(1)
    batch = make_batch(16, 2)
    pairs = [
        {"query": q, "positive": p, "negatives": n}
        for q, p, n in zip(batch["query"], batch["positive"], batch["negatives"])
    ]
    encoder = Encoder.tiny(seed=0, dropout=0.0)
    single = _fit(pairs, encoder, 1, tmp_path / "one")
    # ddp_spawn copies rank 0's weights back into this process's module
    ddp = _fit(pairs, encoder, 2, tmp_path / "two", probe_dir=str(tmp_path))
    for (name, p), p_ddp in zip(single.encoder.named_parameters(), ddp.encoder.parameters()):
        torch.testing.assert_close(
            p_ddp, p, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )
    moved = sum(
        float((p - q).abs().sum()) for p, q in zip(encoder.parameters(), ddp.encoder.parameters())
    )
    assert moved > 1e-3
    for rank in (0, 1):
        assert "probe differs between ranks" in (tmp_path / f"rank{rank}").read_text()
    # in-training validation under DDP: rank 1 got rank 0's set, each encoded a share, and both
    # logged what one process logs
    alone = json.loads((tmp_path / "one" / "val0.json").read_text())
    assert "val/ndcg@10" in alone
    for rank in (0, 1):
        got = json.loads((tmp_path / "two" / f"val{rank}.json").read_text())
        assert got.keys() == alone.keys()
        for k, v in alone.items():
            assert abs(got[k] - v) < 1e-5, (rank, k)
