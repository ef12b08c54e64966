"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): the loss sees the full batch, the encoder only ever holds one mini-batch's graph.

1. encode every chunk of ``mini_batch_size`` texts without autograd, remembering the RNG state
   (the last chunk keeps its graph: it would be re-encoded first, with nothing in between);
2. compute the loss on the full-batch embeddings and its gradient with respect to them (fp32);
3. re-encode each chunk with autograd under the same RNG state (same dropout masks) and backpropagate
   the cached embedding gradient, ``backward(sum(emb * grad))``; parameter gradients accumulate.

The result equals plain training on the same forward passes, for any loss that is a function of
the embeddings: nothing here knows which loss it wraps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch


class RngState:
    """The CPU and (if used) CUDA random state at one moment, to replay a forward pass's dropout."""

    def __init__(self, device: torch.device):
        self.cuda_device = device if device.type == "cuda" else None
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if self.cuda_device is not None else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with this state, then restore the state from before the block."""
        devices = [self.cuda_device] if self.cuda_device is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_device)
            yield


class Embedder(Protocol):
    """What caching needs of the encoder: tokenize once (:meth:`features`), encode features twice."""

    def features(self, texts: Sequence[str], kind: str) -> dict[str, torch.Tensor]: ...

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor: ...


def chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def cached_backward(
    encoder: Embedder,
    groups: Sequence[tuple[Sequence[str], str]],
    mini_batch_size: int,
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    backward: Callable[[torch.Tensor], Any] = torch.Tensor.backward,
    device: torch.device | None = None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    replay_rng: bool = True,
) -> torch.Tensor:
    """One gradient-cached forward/backward over a batch; returns the (detached) loss.

    Work beyond plain training is one forward pass of every chunk but the last, without autograd:
    each chunk is tokenized once, and the last chunk's first pass keeps its graph (no other graph
    exists yet), so it is backpropagated first, before any chunk is re-encoded; at most one chunk's
    graph is alive at a time.

    Args:
        encoder: ``encoder.features(texts, kind)`` tokenizes, ``encoder(features) -> (n, D)``
            encodes with autograd (an :class:`~embedforge.models.encoder.Encoder`).
        groups: the batch's text groups, e.g. ``[(queries, "query"), (positives, "doc")]``.
        mini_batch_size: texts per encoder forward pass.
        loss_fn: full-batch embeddings (one ``(n_i, D)`` tensor per group, fp32) -> scalar loss.
        backward: how to backpropagate a scalar (Lightning's ``manual_backward`` applies the fp16
            loss scaler; the cached gradients are unscaled, so the scaler is applied exactly once).
        device: where the model runs (for the CUDA RNG state); CPU if None.
        extra_loss: a parameter-only term (e.g. an L2-SP anchor) added to the last backward.
        no_sync: context manager that defers DDP gradient all-reduce; every backward but the last
            runs under it, so gradients are reduced once per step.
        replay_rng: replay the random state on the second pass (off only to test that it matters).
    """
    device = device or torch.device("cpu")
    jobs = [  # (group, features): every chunk tokenized once, for both passes
        (g, encoder.features(chunk, kind))
        for g, (texts, kind) in enumerate(groups)
        for chunk in chunks(texts, mini_batch_size)
    ]
    # 1. first pass chunk by chunk: no autograd, except the last chunk, whose graph is kept
    states: list[RngState] = []
    parts: list[list[torch.Tensor]] = [[] for _ in groups]
    with torch.no_grad():
        for g, feats in jobs[:-1]:
            states.append(RngState(device))
            parts[g].append(encoder(feats).float())
    last_group, last_feats = jobs[-1]
    kept = encoder(last_feats)  # (m, D), with its graph
    parts[last_group].append(kept.detach().float())
    # 2. loss and its gradient with respect to the embeddings
    leaves = [torch.cat(p).requires_grad_() for p in parts]  # (n_i, D) each
    loss = loss_fn(leaves)
    grads = [c for g in torch.autograd.grad(loss, leaves) for c in g.split(mini_batch_size)]
    # 3. backpropagate the cached embedding gradients: the kept chunk first, then every other
    #    chunk re-encoded with autograd under its first pass's RNG state (same dropout masks);
    #    parameter gradients accumulate
    order = [len(jobs) - 1, *range(len(jobs) - 1)]
    for step, j in enumerate(order):
        last = step == len(order) - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            if j == len(jobs) - 1:
                emb, kept = kept, None  # its graph is freed by this backward
            else:
                with states[j].replay() if replay_rng else contextlib.nullcontext():
                    emb = encoder(jobs[j][1])  # (m, D)
            surrogate = (emb.float() * grads[j]).sum()  # d(surrogate)/d(emb) = grads[j]
            if last and extra_loss is not None:
                surrogate = surrogate + extra_loss()
            backward(surrogate)
    return loss.detach()
