"""ContrastiveModule: encode -> (gather across devices) -> loss, with in-training IR validation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from embedforge.eval.retrieval import RetrievalSet, evaluate
from embedforge.models.encoder import Encoder


def warmup_linear(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup to 1, then linear decay to 0 at ``total_steps``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return f


class ContrastiveModule(pl.LightningModule):
    """Fine-tunes an :class:`Encoder` with a contrastive loss on (query, positive[, negatives]) batches.

    Args:
        encoder: the model being trained.
        loss: a loss module ``forward(q, d, negatives=None, labels=None)``.
        optimizer: a partial optimizer (``_partial_: true``) called with the parameters.
        warmup_ratio: fraction of the total steps with linear warmup (then linear decay).
        mini_batch_size: gradient-caching chunk size (null = plain training).
        gather_across_devices: under DDP, use every rank's documents as negatives.
        l2sp_weight: anchor to the base model, ``weight/2 * ||theta - theta_0||^2`` (L2-SP,
            Li et al. 2018), which keeps a strong base model from drifting on weak pairs.
        val_set: the in-training validation set (never the reported split).
        metrics: metrics computed at validation, logged as ``val/<metric>``.
        eval_batch_size: encoding batch size for validation.
    """

    def __init__(
        self,
        encoder: Encoder,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float = 0.1,
        mini_batch_size: int | None = None,
        gather_across_devices: bool = True,
        l2sp_weight: float = 0.0,
        val_set: RetrievalSet | None = None,
        metrics: list[str] | tuple[str, ...] = ("ndcg@10", "recall@5", "mrr@10", "recall@100"),
        eval_batch_size: int = 64,
    ):
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.optimizer_factory = optimizer
        self.warmup_ratio = float(warmup_ratio)
        self.mini_batch_size = mini_batch_size
        self.gather_across_devices = gather_across_devices
        self.l2sp_weight = float(l2sp_weight)
        self.val_set = val_set
        self.metrics = list(metrics)
        self.eval_batch_size = int(eval_batch_size)
        self.last_val: dict[str, float] = {}
        if self.l2sp_weight > 0:
            # frozen copy of the starting weights; not a parameter, not saved in checkpoints' state
            self._theta0 = [p.detach().clone() for p in self.encoder.parameters()]

    # ------------------------------------------------------------------ training
    def encode_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        q = self.encoder.embed(batch["query"], "query")  # (B, D)
        d = self.encoder.embed(batch["positive"], "doc")  # (B, D)
        negatives = None
        if batch.get("negatives"):
            b, n = len(batch["negatives"]), len(batch["negatives"][0])
            flat = [t for row in batch["negatives"] for t in row]
            negatives = self.encoder.embed(flat, "doc").view(b, n, -1)  # (B, N, D)
        return q, d, negatives

    def anchor_penalty(self) -> torch.Tensor:
        if self.l2sp_weight <= 0:
            return torch.zeros((), device=self.device)
        drift = sum(((p - p0.to(p.device)) ** 2).sum() for p, p0 in zip(self.encoder.parameters(), self._theta0))
        return 0.5 * self.l2sp_weight * drift

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        q, d, negatives = self.encode_batch(batch)
        # losses compute logits in fp32 whatever the autocast precision
        contrastive = self.loss(q.float(), d.float(), None if negatives is None else negatives.float())
        loss = contrastive + self.anchor_penalty()
        bsz = len(batch["query"])
        self.log("train/loss", contrastive, prog_bar=True, batch_size=bsz)
        self.log("train/batch_size", float(bsz), batch_size=bsz)
        n_neg = bsz - 1 + (len(batch["negatives"]) * len(batch["negatives"][0]) if batch.get("negatives") else 0)
        self.log("train/negatives_per_query", float(n_neg), batch_size=bsz)
        if self.l2sp_weight > 0:
            self.log("train/l2sp", loss - contrastive, batch_size=bsz)
        return loss

    # ------------------------------------------------------------------ validation
    def run_validation(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        result = evaluate(self.encoder, self.val_set, self.metrics, batch_size=self.eval_batch_size)
        return {f"val/{k}": v for k, v in result.metrics.items()}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        scores = self.run_validation()
        self.last_val = scores
        for k, v in scores.items():
            self.log(k, v, prog_bar=k.endswith("ndcg@10"), batch_size=1)

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(self.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        opt = self.trainer.optimizers[0] if self.trainer.optimizers else None
        if opt is not None:
            self.log("train/lr", opt.param_groups[0]["lr"], batch_size=1)
