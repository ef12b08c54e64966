"""Mixed precision from the trainer config: bf16-mixed on CPU trains; logits and loss stay fp32."""

from __future__ import annotations

import copy
import functools

import pytest
import pytorch_lightning as pl
import torch

from embedforge.eval.retrieval import RetrievalSet
from embedforge.models.encoder import Encoder
from embedforge.train.datamodule import PairDataModule
from embedforge.train.module import ContrastiveModule
from tests.conftest import build_loss
from tests.train.test_gradcache import make_batch

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class Losses(pl.Callback):
    def __init__(self):
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


@pytest.mark.parametrize("mini_batch_size", [None, 4])
def test_bf16_mixed_trains_on_cpu(tmp_path, mini_batch_size):
    batch = make_batch(8, 1)
    pairs = [
        {"query": q, "positive": p, "negatives": n}
        for q, p, n in zip(batch["query"], batch["positive"], batch["negatives"])
    ]
    module = ContrastiveModule(
        copy.deepcopy(Encoder.tiny(seed=0, dropout=0.0)),
        build_loss("mnrl"),
        functools.partial(torch.optim.AdamW, lr=3e-3),
        warmup_ratio=0.0,
        mini_batch_size=mini_batch_size,
        gradient_clip_val=1.0,
    )
    losses = Losses()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[losses],
        default_root_dir=str(tmp_path),
    )
    # the same 8 pairs every step (one batch per epoch): the loss must go down
    trainer.fit(module, datamodule=PairDataModule(pairs, batch_size=8, seed=0, has_val=False))
    assert trainer.global_step == 6 and len(losses.values) == 6
    assert all(torch.isfinite(torch.tensor(losses.values)))
    assert losses.values[-1] < losses.values[0] - 0.05, losses.values


def test_logits_and_loss_in_fp32_under_autocast():
    """Inside bf16 autocast the similarity matmul would run in bf16 (~1e-2 error); it must not."""
    torch.manual_seed(0)
    q, d = torch.randn(16, 32), torch.randn(16, 32)
    module = ContrastiveModule(
        Encoder.tiny(seed=0),
        build_loss("mnrl_symmetric"),
        functools.partial(torch.optim.SGD, lr=0.1),
    )
    exact = module.contrastive_loss(q, d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = module.contrastive_loss(q.bfloat16().float(), d.bfloat16().float())
        naive = build_loss("mnrl_symmetric")(q.bfloat16().float(), d.bfloat16().float())
    assert under_autocast.dtype == torch.float32
    exact_rounded = module.contrastive_loss(q.bfloat16().float(), d.bfloat16().float())
    torch.testing.assert_close(under_autocast, exact_rounded, rtol=1e-6, atol=1e-6)
    assert abs(float(naive) - float(exact_rounded)) > 1e-4  # the guard matters
    assert abs(float(exact) - float(exact_rounded)) < 0.1


def test_validation_is_fp32_under_bf16_mixed(tmp_path):
    """Defect: under bf16-mixed Lightning ran validation_step in autocast, so ``val/*`` (and the best
    checkpoint's score) came from bf16 encodings while the base and last weights were scored in fp32."""
    words = "contract party term payment notice breach law court fee period".split()
    corpus = {f"d{i}": " ".join(words[(i * k) % 10] for k in range(1, 7)) for i in range(40)}
    queries = {f"q{i}": " ".join(words[(i * k + 3) % 10] for k in range(1, 4)) for i in range(30)}
    qrels = {f"q{i}": {f"d{(i * 7) % 40}": 1, f"d{(i * 3 + 1) % 40}": 1} for i in range(30)}
    val_set = RetrievalSet(corpus, queries, qrels, name="val")
    metrics = ["mrr@10", "ndcg@10"]
    module = ContrastiveModule(
        Encoder.tiny(seed=0, dropout=0.0),
        build_loss("mnrl"),
        functools.partial(torch.optim.AdamW, lr=3e-3),
        val_set=val_set,
        metrics=metrics,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    pairs = [{"query": "a", "positive": "b"}, {"query": "c", "positive": "d"}]
    [logged] = trainer.validate(module, datamodule=PairDataModule(pairs, batch_size=2))
    fp32 = module.run_validation()
    assert logged == pytest.approx(fp32, abs=1e-6)
    docs = list(corpus.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the old validation_step encoded with
        bf16 = module.encoder.encode(docs, "doc")
    assert abs(bf16 - module.encoder.encode(docs, "doc")).max() > 1e-6  # the guard matters
