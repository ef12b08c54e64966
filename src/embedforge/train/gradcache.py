"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): the loss sees the full batch, the encoder only ever holds one mini-batch's graph.

1. encode every chunk of ``mini_batch_size`` texts without autograd, remembering the RNG state;
2. compute the loss on the full-batch embeddings and its gradient with respect to them (fp32);
3. re-encode each chunk with autograd under the same RNG state (same dropout masks) and backpropagate
   the cached embedding gradient, ``backward(sum(emb * grad))``; parameter gradients accumulate.

The result equals plain training on the same forward passes, for any loss that is a function of
the embeddings: nothing here knows which loss it wraps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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


EmbedFn = Callable[[Sequence[str], str], torch.Tensor]


def chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def cached_backward(
    embed: EmbedFn,
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

    Args:
        embed: ``embed(texts, kind) -> (n, D)`` with autograd (the encoder).
        groups: the batch's text groups, e.g. ``[(queries, "query"), (positives, "doc")]``.
        mini_batch_size: texts per encoder forward pass.
        loss_fn: full-batch embeddings (one ``(n_i, D)`` tensor per group, fp32) -> scalar loss.
        backward: how to backpropagate a scalar (Lightning's ``manual_backward`` applies the fp16
            loss scaler; the cached gradients are unscaled, so the scaler is applied exactly once).
        device: where the model runs (for the CUDA RNG state); CPU if None.
        extra_loss: a parameter-only term (e.g. an L2-SP anchor) added to the last backward.
        no_sync: context manager that defers DDP gradient all-reduce; all chunks but the last run
            under it, so gradients are reduced once per step.
        replay_rng: replay the random state on the second pass (off only to test that it matters).
    """
    device = device or torch.device("cpu")
    # 1. no-grad pass, chunk by chunk
    states: list[list[RngState]] = []
    reps: list[torch.Tensor] = []
    with torch.no_grad():
        for texts, kind in groups:
            group_states, parts = [], []
            for chunk in chunks(texts, mini_batch_size):
                group_states.append(RngState(device))
                parts.append(embed(chunk, kind).float())
            states.append(group_states)
            reps.append(torch.cat(parts))  # (n_i, D)
    # 2. loss and its gradient with respect to the embeddings
    leaves = [r.detach().requires_grad_() for r in reps]
    loss = loss_fn(leaves)
    grads = torch.autograd.grad(loss, leaves)
    # 3. re-encode with autograd under the same dropout masks, backpropagate the cached gradients
    jobs = [
        (chunk, kind, state, g)
        for (texts, kind), group_states, grad in zip(groups, states, grads)
        for chunk, state, g in zip(
            chunks(texts, mini_batch_size), group_states, grad.split(mini_batch_size)
        )
    ]
    for i, (chunk, kind, state, g) in enumerate(jobs):
        last = i == len(jobs) - 1
        ctx = state.replay() if replay_rng else contextlib.nullcontext()
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with ctx:
                emb = embed(chunk, kind)  # (m, D)
            surrogate = (emb.float() * g).sum()  # d(surrogate)/d(emb) = g
            if last and extra_loss is not None:
                surrogate = surrogate + extra_loss()
            backward(surrogate)
    return loss.detach()
