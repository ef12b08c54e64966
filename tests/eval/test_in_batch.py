"""In-batch retrieval metrics (torchmetrics) against a naive loop, and as the module logs them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embedforge.eval.in_batch import in_batch_metrics


def naive(scores: torch.Tensor, labels: list[int]) -> tuple[float, float]:
    acc, rr = 0.0, 0.0
    for i, own in enumerate(labels):
        rank = 1 + sum(1 for j in range(scores.shape[1]) if scores[i, j] > scores[i, own])
        acc += rank == 1
        rr += 1 / rank
    return acc / len(labels), rr / len(labels)


@pytest.mark.parametrize("negative_scores", [False, True])
def test_matches_a_naive_loop(negative_scores):
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(6, 8, generator=g), torch.randn(9, 8, generator=g)  # 9 candidates
    scores = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T  # (6, 9) cosines, some < 0
    if negative_scores:  # torchmetrics alone would count a positive scored <= 0 as not retrieved
        scores = scores - 2.0
    labels = [3, 0, 8, 1, 5, 2]
    m = in_batch_metrics(scores, torch.tensor(labels))
    acc, mrr = naive(scores, labels)
    assert m["acc@1"].item() == pytest.approx(acc) and m["mrr"].item() == pytest.approx(mrr)
    assert 0 < mrr < 1


def test_default_labels_are_the_diagonal():
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.1, 0.2, 0.7]])
    m = in_batch_metrics(scores)
    assert m["acc@1"].item() == pytest.approx(2 / 3)
    assert m["mrr"].item() == pytest.approx((1 + 1 / 2 + 1) / 3)


@pytest.mark.parametrize("mini_batch_size", [None, 2])
def test_module_keeps_the_last_batch_metrics_without_changing_the_loss(
    tiny_encoder, mini_batch_size
):
    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.train.module import ContrastiveModule

    batch = {
        "query": ["pay the fee", "end the deal", "fix the roof", "send a notice"],
        "positive": ["fees are paid monthly", "termination of the deal", "roof repairs", "notices"],
    }
    loss = MultipleNegativesRankingLoss()
    module = ContrastiveModule(tiny_encoder, loss, lambda p: torch.optim.SGD(p, lr=0.0),
                               mini_batch_size=mini_batch_size)  # fmt: skip
    module.encoder.eval()  # no dropout: the reference below sees the same embeddings
    value = module.forward_backward(batch)
    with torch.no_grad():
        q = tiny_encoder.embed(batch["query"], "query")
        d = tiny_encoder.embed(batch["positive"], "doc")
    assert value.item() == pytest.approx(loss(q, d).item(), abs=1e-5)
    scores = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    acc, mrr = naive(scores, [0, 1, 2, 3])
    assert module.in_batch["acc@1"].item() == pytest.approx(acc)
    assert module.in_batch["mrr"].item() == pytest.approx(mrr, abs=1e-6)
