"""In-batch retrieval metrics during training: is each query's own positive ranked first?

A cheap learning signal between validations, computed (without gradients) from the batch the loss
just scored. The reported IR evaluation stays in :mod:`embedforge.eval.retrieval`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def in_batch_metrics(
    scores: torch.Tensor, labels: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Accuracy@1 and MRR of each query's own positive among the batch's candidates (torchmetrics).

    Args:
        scores: ``(B, C)`` similarity of every query with every candidate the loss ranks it
            against (the batch's positives, all ranks' under DDP, then the hard negatives).
        labels: ``(B,)`` column of each query's positive (default ``arange(B)``).

    Returns:
        ``{"acc@1", "mrr"}`` as 0-dim tensors.
    """
    from torchmetrics.functional.classification import multiclass_accuracy
    from torchmetrics.functional.retrieval import retrieval_reciprocal_rank

    n = scores.shape[1]
    if labels is None:
        labels = torch.arange(scores.shape[0], device=scores.device)
    acc = multiclass_accuracy(scores, labels, num_classes=n, average="micro", top_k=1)
    # softmax keeps the order and makes every score positive: torchmetrics' reciprocal rank treats
    # a relevant document with a score <= 0 as not retrieved (cosines can be negative)
    probs = scores.softmax(dim=-1)  # (B, C)
    relevant = F.one_hot(labels, n).bool()  # (B, C)
    rr = [retrieval_reciprocal_rank(p, t) for p, t in zip(probs, relevant)]
    return {"acc@1": acc, "mrr": torch.stack(rr).mean()}
