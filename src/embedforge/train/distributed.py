"""Cross-device negatives: all-gather with gradients that flow back to the local shard."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of the default process group, ``(1, 0)`` outside DDP."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def launch_rank_zero() -> bool:
    """Whether this process is global rank 0 as its launcher set it (Lightning's DDP launcher,
    torchrun, SLURM), usable before any process group exists. True outside DDP."""
    return all(
        int(os.environ.get(k, 0) or 0) == 0
        for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    )


def same_on_every_rank(value: str, what: str) -> None:
    """Raise on every rank when ``value`` differs between ranks (all ranks learn it together, so
    none is left waiting in a collective). No-op outside DDP."""
    ws, _ = world()
    if ws == 1:
        return
    values: list[str | None] = [None] * ws
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"{what} differs between ranks: {values}")


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's ``(n, ...)`` tensor along dim 0; backward sums the gradient of the
    gathered tensor over ranks and returns this rank's slice.

    The sum is what makes the gradient exact: rank r's loss depends on rank s's shard, so the shard's
    gradient is the sum over all ranks' losses. DDP then averages parameter gradients over ranks, which
    gives the gradient of the mean of the per-rank losses (= the single-process loss on the global
    batch when every rank holds an equal share). Uses all_reduce, not reduce_scatter, so it also runs
    on gloo (CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ws, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ws)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (world*n, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0 (rank order); ``x`` itself outside DDP.

    All ranks must pass the same shape. Gradients reach only the local slice, summed over ranks.
    """
    ws, _ = world()
    if ws == 1:
        return x
    return _AllGather.apply(x)


def encode_sharded(
    encoder: Any, texts: Sequence[str], kind: str, batch_size: int = 64, show_progress: bool = False
) -> np.ndarray:
    """Encode ``texts`` with every rank: each encodes a contiguous share (through its embedding
    store, if any), then all shares are gathered; every rank returns the whole float32 ``(N, D)``
    in input order, equal to one process's ``encoder.encode`` (to padding noise, ~1e-7: batches
    differ). Outside DDP: ``encoder.encode``. Every rank must call it with the same texts."""
    ws, rank = world()
    if ws == 1:
        return encoder.encode(texts, kind, batch_size, show_progress)
    # a rank with other texts would leave the others waiting in all_gather: fail on every rank
    same_on_every_rank(f"{len(texts)} {kind} texts", "the texts to encode")
    bounds = np.linspace(0, len(texts), ws + 1).astype(int)
    sizes = np.diff(bounds)
    mine = encoder.encode(
        list(texts[bounds[rank] : bounds[rank + 1]]), kind, batch_size, show_progress
    )
    # NCCL gathers CUDA tensors only (gloo: CPU); all_gather needs one shape on every rank
    device = torch.device("cuda", torch.cuda.current_device()) if _nccl() else torch.device("cpu")
    padded = torch.zeros(int(sizes.max()), encoder.dim, device=device)
    padded[: len(mine)] = torch.from_numpy(np.asarray(mine, dtype=np.float32)).to(device)
    parts = [torch.empty_like(padded) for _ in range(ws)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).cpu().numpy()  # (N, D)


def _nccl() -> bool:
    return str(dist.get_backend()).lower() == "nccl"


class ShardedEncoder:
    """An encoder whose ``encode`` is :func:`encode_sharded`: under DDP every rank encodes a
    share and gets the whole (each rank must encode the same texts); everything else is the
    wrapped encoder's."""

    def __init__(self, encoder: Any):
        self.encoder = encoder

    def encode(
        self, texts: Sequence[str], kind: str, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        return encode_sharded(self.encoder, texts, kind, batch_size, show_progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)
