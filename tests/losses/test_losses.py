"""Each loss against a naive loop implementation on random embeddings.

The properties every loss must have are parametrized over ``conf/loss/*.yaml``: a new loss file
fails here until it has a naive reference in ``NAIVE``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embedforge.errors import EmbedforgeError
from embedforge.losses import MultipleNegativesRankingLoss, TripletLoss
from tests.conftest import build_loss, loss_configs


def cos(a, b):
    return float(F.cosine_similarity(a[None], b[None]).item())


def naive_mnrl(q, d, negs, scale, symmetric, margin=None):
    """InfoNCE by hand; with ``margin``, candidates scoring above the positive + margin are left out."""

    def nll(anchor, cands, pos):
        sims = [cos(anchor, c) for c in cands]
        kept = [
            s for j, s in enumerate(sims) if j == pos or margin is None or s <= sims[pos] + margin
        ]
        return -scale * sims[pos] + math.log(sum(math.exp(scale * s) for s in kept))

    b = q.shape[0]
    cands = list(d) + ([n for row in negs for n in row] if negs is not None else [])
    loss = sum(nll(q[i], cands, i) for i in range(b)) / b
    if symmetric:
        t = sum(nll(d[i], list(q), i) for i in range(b)) / b
        loss = (loss + t) / 2
    return loss


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_negs", [False, True])
def test_mnrl_matches_naive(symmetric, with_negs):
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    negs = torch.randn(5, 2, 8, generator=g) if with_negs else None
    got = MultipleNegativesRankingLoss(scale=20.0, symmetric=symmetric)(q, d, negs)
    assert got.item() == pytest.approx(naive_mnrl(q, d, negs, 20.0, symmetric), rel=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("margin", [-0.05, 0.0, 0.1])
def test_mnrl_false_negative_filtering_matches_naive(symmetric, margin):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(6, 8, generator=g)
    d = q + 0.8 * torch.randn(6, 8, generator=g)
    negs = torch.stack(
        [d.roll(1, 0) + 0.1 * torch.randn(6, 8, generator=g)], dim=1
    )  # near others' positives
    loss = MultipleNegativesRankingLoss(
        scale=20.0, symmetric=symmetric, false_negative_margin=margin
    )
    got = loss(q, d, negs).item()
    assert got == pytest.approx(naive_mnrl(q, d, negs, 20.0, symmetric, margin), rel=1e-5)
    # the filter removes something here, so this is not the unfiltered loss
    assert got < naive_mnrl(q, d, negs, 20.0, symmetric) - 1e-4


def test_mnrl_labels_select_positive_among_gathered_docs():
    g = torch.Generator().manual_seed(1)
    q, d = torch.randn(3, 8, generator=g), torch.randn(9, 8, generator=g)
    labels = torch.tensor([3, 4, 5])  # rank 1 of 3: its docs sit at rows 3..5
    loss = MultipleNegativesRankingLoss(scale=10.0)
    logits = 10.0 * F.normalize(q) @ F.normalize(d).T
    assert loss(q, d, labels=labels).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )


def naive_triplet(q, d, negs, margin):
    terms = []
    for i in range(q.shape[0]):
        pos = cos(q[i], d[i])
        if negs is not None:
            for n in negs[i]:
                terms.append(max(0.0, cos(q[i], n) - pos + margin))
        else:
            hardest = max(cos(q[i], d[j]) for j in range(d.shape[0]) if j != i)
            terms.append(max(0.0, hardest - pos + margin))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("with_negs", [False, True])
def test_triplet_matches_naive(with_negs):
    g = torch.Generator().manual_seed(2)
    q, d = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    negs = torch.randn(6, 3, 8, generator=g) if with_negs else None
    got = TripletLoss(margin=0.3)(q, d, negs)
    assert got.item() == pytest.approx(naive_triplet(q, d, negs, 0.3), rel=1e-5)


#: naive loop reference of each loss class, called with the configured loss and (q, d, negatives)
NAIVE = {
    MultipleNegativesRankingLoss: lambda f, q, d, n: naive_mnrl(
        q, d, n, f.scale, f.symmetric, f.false_negative_margin
    ),
    TripletLoss: lambda f, q, d, n: naive_triplet(q, d, n, f.margin),
}


@pytest.mark.parametrize("name", loss_configs())
@pytest.mark.parametrize("with_negs", [False, True])
def test_configured_loss_matches_its_naive_reference(name, with_negs):
    loss = build_loss(name)
    assert type(loss) in NAIVE, f"conf/loss/{name}.yaml: add a naive reference to NAIVE"
    g = torch.Generator().manual_seed(3)
    q, d = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    negs = torch.randn(6, 2, 8, generator=g) if with_negs else None
    expected = NAIVE[type(loss)](loss, q, d, negs)
    assert loss(q, d, negs).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", loss_configs())
def test_configured_loss_follows_labels_among_gathered_docs(name):
    """Under DDP a rank's positives sit at ``labels`` among every rank's documents: moving the
    documents (and their negatives) with the labels must not change the loss."""
    loss = build_loss(name)
    g = torch.Generator().manual_seed(4)
    q, d = torch.randn(3, 8, generator=g), torch.randn(9, 8, generator=g)
    negs = torch.randn(9, 2, 8, generator=g)
    labels = torch.tensor([3, 4, 5])
    perm = torch.randperm(9, generator=g)  # new row i holds old row perm[i]
    where = torch.argsort(perm)  # old row r is now at where[r]
    moved = loss(q, d[perm], negs[perm], where[labels])
    assert moved.item() == pytest.approx(loss(q, d, negs, labels).item(), rel=1e-5)


@pytest.mark.parametrize("name", loss_configs())
def test_configured_loss_computes_in_fp32_from_half_inputs(name):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(4, 8, generator=g).to(torch.bfloat16).requires_grad_()
    d = torch.randn(4, 8, generator=g).to(torch.bfloat16)
    loss = build_loss(name)(q, d)
    assert loss.dtype == torch.float32
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad.float()).all()


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: MultipleNegativesRankingLoss(scale=0), "scale"),
        (lambda: MultipleNegativesRankingLoss(similarity="l2"), "similarity"),
        (lambda: TripletLoss(margin=-0.1), "margin"),
        (lambda: TripletLoss(similarity="euclid"), "similarity"),
    ],
)
def test_bad_loss_arguments_are_one_line_errors(make, needle):
    with pytest.raises(EmbedforgeError, match=needle) as e:
        make()
    assert "\n" not in str(e.value)
