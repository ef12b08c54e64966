"""Shared pieces of the losses: candidate matrix and similarity, always in fp32."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from embedforge.errors import EmbedforgeError

SIMILARITIES = ("cos", "dot")


class Loss(nn.Module):
    """Base class of every loss: ``forward(q, d, negatives=None, labels=None, scores=None)``.

    Inputs: ``q`` (B, D) queries; ``d`` (B_d, D) documents, ``B_d >= B`` (every rank's under DDP);
    ``negatives`` (B_d, N, D) laid out like ``d``, or None; ``labels`` (B,) the row of each query's
    positive in ``d`` (default ``arange(B)``); ``scores`` (B,) each pair's graded label in [0, 1]
    (``score`` in ``pairs.jsonl``), or None. Ranking losses ignore ``scores``.
    """

    #: the loss needs a ``score`` on the training pairs (graded labels): checked before training
    needs_scores: bool = False

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        negatives: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def check_similarity(kind: str) -> str:
    """``kind`` if it names a similarity (``cos`` or ``dot``), else a one-line error."""
    if kind not in SIMILARITIES:
        raise EmbedforgeError(f"loss.similarity must be 'cos' or 'dot', got {kind!r}")
    return kind


def check_positive(name: str, value: float) -> float:
    """``value`` as a float if finite and > 0, else a one-line error naming ``loss.<name>``."""
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise EmbedforgeError(f"loss.{name} must be a finite number > 0, got {value!r}")
    return x


def check_margin(value: float | None) -> float | None:
    """``loss.false_negative_margin`` as a float (None = off), else a one-line error."""
    if value is None:
        return None
    x = float(value)
    if not math.isfinite(x):
        raise EmbedforgeError(
            f"loss.false_negative_margin must be a finite number or null, got {value!r}"
        )
    return x


def mask_false_negatives(
    sim: torch.Tensor, labels: torch.Tensor, margin: float | None
) -> torch.Tensor:
    """``sim`` (B, C) with every candidate scoring above its row's positive by more than ``margin``
    set to ``-inf`` (positive-aware false-negative filtering); the positive is never masked.

    A negative that outscores the positive is more likely an unlabeled positive than a hard negative
    (Moreira et al. 2024, "NV-Retriever"). The mask is chosen on detached scores.
    """
    if margin is None:
        return sim
    rows = torch.arange(sim.shape[0], device=sim.device)
    pos = sim.detach()[rows, labels]  # (B,)
    mask = sim.detach() > pos[:, None] + margin  # (B, C)
    mask[rows, labels] = False
    return sim.masked_fill(mask, float("-inf"))


def candidates(d: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
    """Documents followed by all hard negatives as extra columns: ``(B_d + B*N, D)``."""
    if negatives is None or negatives.numel() == 0:
        return d
    return torch.cat([d, negatives.reshape(-1, d.shape[-1])], dim=0)


def similarity(a: torch.Tensor, b: torch.Tensor, kind: str = "cos") -> torch.Tensor:
    """Pairwise similarity ``(A, B)`` in fp32 (logits never in half precision)."""
    a, b = a.float(), b.float()
    if kind == "cos":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    elif kind != "dot":
        raise ValueError(f"similarity must be 'cos' or 'dot', got {kind!r}")
    return a @ b.T


def row_similarity(q: torch.Tensor, others: torch.Tensor, kind: str = "cos") -> torch.Tensor:
    """Similarity of each query with its own rows: q (B, D), others (B, N, D) -> (B, N), fp32."""
    q, others = q.float(), others.float()
    if kind == "cos":
        q, others = F.normalize(q, dim=-1), F.normalize(others, dim=-1)
    return torch.einsum("bd,bnd->bn", q, others)


def scored_pairs(
    q: torch.Tensor,
    d: torch.Tensor,
    negatives: torch.Tensor | None,
    labels: torch.Tensor | None,
    scores: torch.Tensor | None,
    kind: str = "cos",
    loss: str = "loss",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's similarity and graded label, ``(P,)`` and ``(P,)`` in fp32, for graded losses.

    The pairs are (q_i, its positive) with label ``scores[i]``, then every (q_i, hard negative) with
    label 0 (a negative is judged not relevant). ``scores=None`` is a one-line error: with positives
    only the label is constant and a graded loss is degenerate.
    """
    if scores is None:
        raise EmbedforgeError(
            f"loss={loss} needs graded pairs: the batch has no 'score' (add a score in [0, 1] to"
            " every pair in pairs.jsonl, or use a ranking loss such as loss=mnrl)"
        )
    b = q.shape[0]
    if labels is None:
        labels = torch.arange(b, device=q.device)
    pos = row_similarity(q, d[labels][:, None], kind)[:, 0]  # (B,)
    sims, target = [pos], [scores.float().to(pos.device)]
    if negatives is not None and negatives.numel() > 0:
        neg = row_similarity(q, negatives[labels], kind).reshape(-1)  # (B*N,)
        sims.append(neg)
        target.append(torch.zeros_like(neg))
    return torch.cat(sims), torch.cat(target)
