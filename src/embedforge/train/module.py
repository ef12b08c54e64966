"""ContrastiveModule: encode -> (gather across devices) -> loss, with in-training IR validation.

Optimization is manual (one code path for plain and gradient-cached steps): the module runs the
backward pass(es), clips gradients, steps the optimizer and the scheduler. Precision comes from the
Trainer (``conf/trainer/``); logits and the loss are always computed in fp32, outside autocast.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from embedforge.errors import EmbedforgeError
from embedforge.eval.in_batch import in_batch_metrics
from embedforge.eval.metrics import DEFAULT_METRICS
from embedforge.eval.retrieval import EvalResult, RetrievalSet, evaluate
from embedforge.eval.ship import SHIP_METRIC
from embedforge.losses.common import Loss, candidates, similarity
from embedforge.models.encoder import Encoder
from embedforge.train.distributed import ShardedEncoder, all_gather_with_grad, world
from embedforge.train.gradcache import cached_backward
from embedforge.train.memory import return_freed_blocks
from embedforge.types import DEFAULT_SCORE, Pair

log = logging.getLogger("embedforge")


def warmup_linear(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup to 1, then linear decay to 0 at ``total_steps``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return f


def recompute_layers(estimate: float, budget: float | None, layers: int) -> int:
    """How many of ``layers`` equal layers to recompute in backward so that a step's saved
    activations (``estimate`` bytes with none recomputed) stay under ``budget``. The recomputed
    layers are the lowest: backward reaches them after the kept layers above have freed theirs,
    so the peak is the kept layers' activations (one layer's when all are recomputed). 0 when
    the estimate fits or there is no budget."""
    if budget is None or estimate <= budget:
        return 0
    kept = min(layers - 1, int(budget // (estimate / layers)))
    return layers - kept


class ContrastiveModule(pl.LightningModule):
    """Fine-tunes an :class:`Encoder` with a contrastive loss on (query, positive[, negatives]) batches.

    Args:
        encoder: the model being trained.
        loss: a loss module ``forward(q, d, negatives=None, labels=None, scores=None)``
            (:class:`~embedforge.losses.common.Loss`); ``scores`` are the batch's ``score`` labels.
        optimizer: a partial optimizer (``_partial_: true``) called with the parameters.
        warmup_ratio: fraction of the total steps with linear warmup (then linear decay).
        mini_batch_size: gradient-caching chunk size (null = plain training): the loss sees the whole
            batch, the encoder holds the graph of ``mini_batch_size`` texts at a time.
        gather_across_devices: under DDP, use every rank's documents (and hard negatives) as
            negatives; labels are offset by rank.
        l2sp_weight: anchor to the base model, ``weight/2 * ||theta - theta_0||^2`` (L2-SP,
            Li et al. 2018), which keeps a strong base model from drifting on weak pairs.
        val_set: the in-training validation set (never the reported split).
        metrics: metrics computed at validation, logged as ``val/<metric>``.
        eval_batch_size: encoding batch size for validation.
        gradient_clip_val: clip the gradient norm to this value (null/0 = no clipping); the module
            clips because Lightning refuses ``Trainer(gradient_clip_val)`` with manual optimization.
        gather_queries: under DDP with ``gather_across_devices``, also gather queries and compute
            the loss on the whole global batch on every rank (needed for an exact symmetric loss).
        empty_queries: how validation counts queries without a relevant document (``zero``/``skip``).
        lora: ``{r, alpha, dropout, target_modules}``: with ``r > 0`` the encoder's transformer is
            wrapped in LoRA adapters and only they train (:meth:`Encoder.add_lora`; the saved model
            has them merged). None or ``r = 0``: full fine-tuning.
        activation_budget_gb: the training step's saved activations are kept under this: when
            the first batch's estimate (:meth:`Encoder.activation_bytes`: texts per step, or per
            ``mini_batch_size`` chunk, x their padded lengths) exceeds it, the fewest layers
            that bring it under are recomputed in backward (:func:`recompute_layers`; gradient
            checkpointing: the same gradients bit for bit) and, on CPU, freed blocks are returned
            to the OS (:mod:`embedforge.train.memory`); each recomputed layer costs a forward
            pass of it again (all six of MiniLM: ~1.5x the step on CPU, docs/scale.md).
            ``auto``: 1.5 GB on CPU, half the GPU's memory on a GPU; None: never.
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
        metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
        eval_batch_size: int = 64,
        gradient_clip_val: float | None = None,
        gather_queries: bool = False,
        empty_queries: str = "zero",
        lora: dict[str, Any] | None = None,
        activation_budget_gb: float | str | None = "auto",
    ):
        super().__init__()
        self.automatic_optimization = False
        lora = dict(lora or {})
        if int(lora.get("r") or 0) > 0 and not encoder.has_lora:
            trainable = encoder.add_lora(**lora)
            log.info("LoRA r=%s: %d trainable parameters", lora["r"], trainable)
        self.encoder = encoder
        self.loss = loss
        self.optimizer_factory = optimizer
        self.warmup_ratio = float(warmup_ratio)
        self.mini_batch_size = int(mini_batch_size) if mini_batch_size else None
        self.gather_across_devices = bool(gather_across_devices)
        self.gather_queries = bool(gather_queries)
        self.gradient_clip_val = float(gradient_clip_val) if gradient_clip_val else None
        self.l2sp_weight = float(l2sp_weight)
        self.val_set = val_set
        self.metrics = list(metrics)
        self.eval_batch_size = int(eval_batch_size)
        self.in_batch: dict[str, torch.Tensor] = {}  # acc@1 and MRR of the last training batch
        self.empty_queries = empty_queries
        self._announced = False
        self._val_shared = False  # under DDP: rank 0's validation set sent to every rank
        self.activation_budget_gb = activation_budget_gb
        #: set on the first training batch: ``{estimate_gb, budget_gb, checkpointing}``
        self.activation_plan: dict[str, Any] | None = None
        #: the LR schedule's length in steps when it is not this trainer's (a mix-choice probe
        #: trains the first steps of the run's schedule); None: ``estimated_stepping_batches``
        self.schedule_steps: int | None = None
        if self.l2sp_weight > 0:
            # frozen copy of the starting weights; not a parameter, not saved in checkpoints' state
            self._theta0 = [p.detach().clone() for p in self.encoder.parameters()]

    # ------------------------------------------------------------------ training
    def encode_batch(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
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
        drift = sum(
            ((p - p0.to(p.device)) ** 2).sum()
            for p, p0 in zip(self.encoder.parameters(), self._theta0)
        )
        return 0.5 * self.l2sp_weight * drift

    def _gathering(self) -> bool:
        return self.gather_across_devices and world()[0] > 1

    def _needs_scores(self) -> bool:
        return isinstance(self.loss, Loss) and self.loss.needs_scores

    def check_pairs(self, pairs: list[Pair]) -> None:
        """Fail before training when a graded loss (``needs_scores``) gets pairs without graded
        labels: with positives only and no hard negatives (label 0) every label is
        ``DEFAULT_SCORE`` and the loss is degenerate."""
        if not self._needs_scores():
            return
        labels = {float(p.get("score", DEFAULT_SCORE)) for p in pairs}
        if any(p.get("negatives") for p in pairs):
            labels.add(0.0)  # a hard negative is judged not relevant
        if len(labels) < 2:
            have = "a 'score'" if any("score" in p for p in pairs) else "no 'score'"
            raise EmbedforgeError(
                f"loss {type(self.loss).__name__} needs graded pairs, but all {len(pairs)} training"
                f" pairs have {have}, the same label {labels.pop() if labels else DEFAULT_SCORE} and"
                " no negatives: the loss is degenerate; add 'score' in [0, 1] to pairs.jsonl (or"
                " train on graded BEIR qrels, data.train_queries=true), add negatives"
                " (data.group_negatives, data.hard_negatives.num), or use loss=mnrl"
            )

    def batch_scores(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor | None:
        """The batch's graded labels ``(B,)`` in fp32. Unscored pairs with hard negatives under a
        graded loss: ``DEFAULT_SCORE`` each (the positive above its negatives). Else None."""
        if "score" in batch:
            return torch.tensor(batch["score"], dtype=torch.float32, device=device)
        if self._needs_scores() and batch.get("negatives"):
            return torch.full((len(batch["query"]),), DEFAULT_SCORE, device=device)
        return None

    def contrastive_loss(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        negatives: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The configured loss on this rank's embeddings, in fp32 and outside autocast.

        Under DDP with ``gather_across_devices`` the candidates are every rank's documents and hard
        negatives (labels offset by rank), or with ``gather_queries`` the whole global batch (and
        the scores, which belong to the queries, are gathered with them).
        """
        with torch.autocast(self.device.type, enabled=False):  # logits never in half precision
            q, d = q.float(), d.float()
            negatives = None if negatives is None else negatives.float()
            labels = None
            if self._gathering():
                _, rank = world()
                d = all_gather_with_grad(d)  # (W*B, D)
                negatives = (
                    None if negatives is None else all_gather_with_grad(negatives)
                )  # (W*B, N, D)
                if self.gather_queries:
                    q = all_gather_with_grad(q)  # (W*B, D): every rank computes the global loss
                    scores = None if scores is None else all_gather_with_grad(scores)  # (W*B,)
                else:
                    labels = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
            loss = self.loss(q, d, negatives, labels, scores)
            # logged by training_step; no gradient, no RNG: training is unchanged
            with torch.no_grad():
                scores = similarity(q, candidates(d, negatives))  # (B, B_d+B*N), cosine
                self.in_batch = in_batch_metrics(scores, labels)
            return loss

    def _no_sync(self) -> contextlib.AbstractContextManager:
        if self._trainer is None:
            return contextlib.nullcontext()
        strategy = self._trainer.strategy
        return (
            strategy.block_backward_sync()
            if hasattr(strategy, "block_backward_sync")
            else contextlib.nullcontext()
        )

    def _backward(self, loss: torch.Tensor) -> None:
        # Lightning's manual_backward applies the fp16 loss scaler and DDP hooks; plain outside a Trainer
        if self._trainer is None:
            loss.backward()
        else:
            self.manual_backward(loss)

    def forward_backward(
        self, batch: dict[str, Any], backward: Callable[[torch.Tensor], Any] | None = None
    ) -> torch.Tensor:
        """Loss of one batch with gradients accumulated into ``.grad`` (plain or cached).

        ``backward`` overrides how a scalar is backpropagated (tests scale it like an fp16 scaler).
        """
        backward = backward or self._backward
        bsz = len(batch["query"])
        extra = self.anchor_penalty if self.l2sp_weight > 0 else None
        scores = self.batch_scores(batch, self.device)  # (B,) or None
        if self.mini_batch_size is None:
            q, d, negatives = self.encode_batch(batch)
            contrastive = self.contrastive_loss(q, d, negatives, scores)
            backward(contrastive + (extra() if extra else 0.0))
            return contrastive.detach()
        groups = [(batch["query"], "query"), (batch["positive"], "doc")]
        n = len(batch["negatives"][0]) if batch.get("negatives") else 0
        if n:
            groups.append(([t for row in batch["negatives"] for t in row], "doc"))

        def loss_fn(reps: list[torch.Tensor]) -> torch.Tensor:
            negatives = reps[2].view(bsz, n, -1) if n else None  # (B, N, D)
            return self.contrastive_loss(reps[0], reps[1], negatives, scores)

        return cached_backward(
            self.encoder,
            groups,
            self.mini_batch_size,
            loss_fn,
            backward=backward,
            device=self.device,
            extra_loss=extra,
            no_sync=self._no_sync,
        )

    def batch_stats(self, batch: dict[str, Any]) -> dict[str, float]:
        """Effective batch: pairs per optimizer step and negatives each query is ranked against."""
        bsz = len(batch["query"])
        ws = world()[0]
        n = len(batch["negatives"][0]) if batch.get("negatives") else 0
        shared = bsz * (ws if self._gathering() else 1)  # documents each query is scored against
        return {
            "train/batch_size": float(bsz),
            "train/global_batch_size": float(bsz * ws),
            "train/negatives_per_query": float(shared - 1 + shared * n),
        }

    def budget_bytes(self) -> float | None:
        """``activation_budget_gb`` in bytes (``auto`` resolved for this device)."""
        budget = self.activation_budget_gb
        if budget is None:
            return None
        if budget == "auto":
            if self.device.type == "cuda":
                return 0.5 * torch.cuda.get_device_properties(self.device).total_memory
            return 1.5 * 2**30
        return float(budget) * 2**30

    def plan_activations(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Estimate the first batch's saved activations and turn on gradient checkpointing when
        they exceed the budget (:attr:`activation_plan`)."""
        groups = [(batch["query"], "query"), (batch["positive"], "doc")]
        if batch.get("negatives"):
            groups.append(([t for row in batch["negatives"] for t in row], "doc"))
        lengths = [
            (len(texts), int(self.encoder.token_counts(texts, kind).max()))
            for texts, kind in groups
        ]
        if self.mini_batch_size:  # the encoder holds one chunk of one group at a time
            n, length = max(lengths, key=lambda x: x[1])
            lengths = [(min(self.mini_batch_size, n), length)]
        estimate = self.encoder.activation_bytes(lengths)
        budget = self.budget_bytes()
        layers = self.encoder.num_layers
        recomputed = self.encoder.set_gradient_checkpointing(
            recompute_layers(estimate, budget, layers)
        )
        return {
            "estimate_gb": float(f"{estimate / 2**30:.3g}"),
            "budget_gb": None if budget is None else round(budget / 2**30, 2),
            "checkpointing": recomputed > 0,
            "recomputed_layers": f"{recomputed}/{layers}",
            # over budget on the host, freed activations also go back to the OS (train/memory.py)
            "returns_freed_blocks": recomputed > 0
            and self.device.type == "cpu"
            and return_freed_blocks(),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        scheduler = self.lr_schedulers()
        if self.activation_plan is None:
            self.activation_plan = self.plan_activations(batch)
        opt.zero_grad(set_to_none=True)
        contrastive = self.forward_backward(batch)
        opt.step()  # clipping happens in on_before_optimizer_step (after fp16 unscaling)
        if scheduler is not None:
            scheduler.step()
        bsz = len(batch["query"])
        stats = self.batch_stats(batch)
        if not self._announced:
            self._announced = True
            log.info(
                "effective batch: %d pairs per step (%d per device x %d), each query ranked against %d"
                " negatives; encoder mini-batch %s",
                stats["train/global_batch_size"],
                bsz,
                world()[0],
                stats["train/negatives_per_query"],
                self.mini_batch_size or "off",
            )
            plan = self.activation_plan or {}
            log.info(
                "training memory: ~%.1f GB of activations per step (budget %s GB): %s",
                plan.get("estimate_gb", float("nan")),
                plan.get("budget_gb"),
                f"{plan.get('recomputed_layers')} layers recomputed in backward (gradient"
                " checkpointing: same gradients, slower; module.activation_budget_gb=null: off)"
                if plan.get("checkpointing")
                else "kept",
            )
        self.log("train/loss", contrastive, prog_bar=True, batch_size=bsz, sync_dist=world()[0] > 1)
        for k, v in self.in_batch.items():  # in-batch retrieval of each query's own positive
            self.log(f"train/{k}", v, batch_size=bsz, sync_dist=world()[0] > 1)
        for k, v in stats.items():
            self.log(k, v, batch_size=bsz)
        if self.l2sp_weight > 0:
            with torch.no_grad():
                self.log("train/l2sp", self.anchor_penalty(), batch_size=bsz)
        return contrastive

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.gradient_clip_val:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm"
            )

    def freeze_unused_parameters(self) -> list[str]:
        """Freeze parameters that never reach the embedding (e.g. BERT's pooler head under mean
        pooling), found with one tiny backward pass; DDP with ``find_unused_parameters=False``
        fails on them otherwise. Returns their names."""
        self.encoder.zero_grad(set_to_none=True)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # leave the training RNG stream untouched
            self.encoder.embed(["unused parameter probe"], "query").float().sum().backward()
        unused = [
            n for n, p in self.encoder.named_parameters() if p.requires_grad and p.grad is None
        ]
        for n, p in self.encoder.named_parameters():
            if n in unused:
                p.requires_grad_(False)
        self.encoder.zero_grad(set_to_none=True)
        return unused

    def setup(self, stage: str) -> None:
        if stage == "fit":  # before Lightning wraps the module in DDP
            unused = self.freeze_unused_parameters()
            if unused:
                log.info(
                    "frozen %d parameters that do not affect the embedding: %s", len(unused), unused
                )

    def on_train_start(self) -> None:
        # Hugging Face models load in eval mode and Lightning keeps the mode it finds: train with
        # dropout like sentence-transformers' fit (validation switches to eval and back itself)
        self.encoder.train()

    # ------------------------------------------------------------------ validation
    def run_validation(self, sharded: bool = False) -> dict[str, float]:
        """``val/<metric>`` of the current weights (:meth:`validation_result`'s means)."""
        if self.val_set is None:
            return {}
        return {f"val/{k}": v for k, v in self.validation_result(sharded).metrics.items()}

    def validation_result(self, sharded: bool = False) -> EvalResult:
        """The current weights on the validation set, per query, encoded in fp32 with autocast
        off: Lightning runs ``validation_step`` inside the trainer's autocast, but every selection
        candidate (base, best checkpoint, last, a mix probe) must be scored the same way.
        ``sharded``: every DDP rank calls this and encodes a share of the texts
        (:class:`ShardedEncoder`); each then scores the whole."""
        with torch.autocast(self.device.type, enabled=False):
            return evaluate(
                ShardedEncoder(self.encoder) if sharded else self.encoder,
                self.val_set,
                self.metrics,
                batch_size=self.eval_batch_size,
                empty_queries=self.empty_queries,
            )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        # every rank encodes a share of the validation texts; rank 0's scores are logged by all
        # (the checkpoint monitor needs one value everywhere)
        if world()[0] > 1 and not self._val_shared:  # ranks > 0 built no sets (rank0_pairs)
            self.val_set = self.trainer.strategy.broadcast(self.val_set, src=0)
            self._val_shared = True
        scores = self.run_validation(sharded=True)
        scores = self.trainer.strategy.broadcast(scores, src=0)
        for k, v in scores.items():
            self.log(k, v, prog_bar=k.endswith(SHIP_METRIC), batch_size=1)

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = max(1, int(self.schedule_steps or self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(self.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(total, warmup))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        opt = self.trainer.optimizers[0] if self.trainer.optimizers else None
        if opt is not None:
            self.log("train/lr", opt.param_groups[0]["lr"], batch_size=1)
