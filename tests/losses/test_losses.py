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
from embedforge.losses import (
    CoSENTLoss,
    CosineSimilarityLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    TripletLoss,
)
from tests.conftest import build_loss, compose_config, loss_configs


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


def graded(q, d, negs, scores):
    """(cosine, label) of every pair: (q_i, d_i) labelled scores[i], (q_i, each negative) 0."""
    out = [(cos(q[i], d[i]), float(scores[i])) for i in range(q.shape[0])]
    if negs is not None:
        out += [(cos(q[i], n), 0.0) for i in range(q.shape[0]) for n in negs[i]]
    return out


def naive_cosine(q, d, negs, scores):
    pairs = graded(q, d, negs, scores)
    return sum((c - s) ** 2 for c, s in pairs) / len(pairs)


def naive_cosent(q, d, negs, scores, scale):
    pairs = graded(q, d, negs, scores)
    total = sum(math.exp(scale * (cj - ci)) for ci, si in pairs for cj, sj in pairs if si > sj)
    return math.log(1 + total)


def naive_matryoshka(f, q, d, negs, scores):
    """Sum over dims of the inner loss's naive reference on the first k coordinates (cosine needs
    no renormalization: the naive references normalize themselves)."""
    inner = NAIVE[type(f.inner)]
    return sum(
        w * inner(f.inner, q[:, :k], d[:, :k], None if negs is None else negs[..., :k], scores)
        for k, w in zip(f.matryoshka_dims, f.matryoshka_weights)
    )


def random_scores(b, g):
    return torch.rand(b, generator=g).round(decimals=1)  # graded labels in [0, 1] with ties


@pytest.mark.parametrize("with_negs", [False, True])
def test_cosine_matches_naive(with_negs):
    g = torch.Generator().manual_seed(6)
    q, d, s = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), random_scores(5, g)
    negs = torch.randn(5, 2, 8, generator=g) if with_negs else None
    got = CosineSimilarityLoss()(q, d, negs, scores=s)
    assert got.item() == pytest.approx(naive_cosine(q, d, negs, s), rel=1e-5)


@pytest.mark.parametrize("with_negs", [False, True])
def test_cosent_matches_naive(with_negs):
    g = torch.Generator().manual_seed(7)
    q, d, s = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), random_scores(6, g)
    negs = torch.randn(6, 2, 8, generator=g) if with_negs else None
    got = CoSENTLoss(scale=5.0)(q, d, negs, scores=s)
    assert got.item() == pytest.approx(naive_cosent(q, d, negs, s, 5.0), rel=1e-5)


def test_cosent_depends_on_the_order_of_labels_only():
    """Similarities ordered like the labels: a small loss, whatever the label values; reversed: large."""
    c = torch.tensor([0.9, 0.5, 0.0, -0.5])  # cos(q_i, d_i)
    q = torch.eye(4)
    d = c[:, None] * torch.eye(4) + (1 - c**2).sqrt()[:, None] * torch.eye(4).roll(1, dims=1)
    torch.testing.assert_close(F.cosine_similarity(q, d), c)
    loss = CoSENTLoss(scale=20.0)
    right = loss(q, d, scores=torch.tensor([1.0, 0.7, 0.3, 0.0])).item()
    assert right < 1e-3
    assert loss(q, d, scores=torch.tensor([0.4, 0.3, 0.2, 0.1])).item() == pytest.approx(right)
    assert loss(q, d, scores=torch.tensor([0.0, 0.3, 0.7, 1.0])).item() > 20.0


@pytest.mark.parametrize("loss", [CosineSimilarityLoss(), CoSENTLoss()])
def test_graded_loss_without_scores_is_a_one_line_error(loss):
    q = torch.randn(3, 8)
    with pytest.raises(EmbedforgeError, match="needs graded pairs.*score") as e:
        loss(q, q)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("inner", [MultipleNegativesRankingLoss(scale=7.0), CoSENTLoss(scale=3.0)])
@pytest.mark.parametrize("with_negs", [False, True])
def test_matryoshka_is_the_weighted_sum_of_inner_on_truncated_renormalized_embeddings(
    inner, with_negs
):
    """Written out by hand with dot similarity, where renormalizing the truncation matters."""
    g = torch.Generator().manual_seed(8)
    q, d, s = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g), random_scores(5, g)
    negs = torch.randn(5, 2, 16, generator=g) if with_negs else None
    inner.similarity = "dot"
    dims, weights = [16, 8, 3], [1.0, 0.5, 2.0]
    got = MatryoshkaLoss(inner, dims, weights)(q, d, negs, None, s)
    expected = 0.0
    for k, w in zip(dims, weights):
        qk, dk = F.normalize(q[:, :k], dim=1), F.normalize(d[:, :k], dim=1)
        nk = None if negs is None else F.normalize(negs[:, :, :k], dim=2)
        expected += w * inner(qk, dk, nk, None, s).item()
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # renormalization is what makes this differ from plain slicing under dot similarity
    sliced = sum(
        w * inner(q[:, :k], d[:, :k], None if negs is None else negs[..., :k], None, s).item()
        for k, w in zip(dims, weights)
    )
    assert got.item() != pytest.approx(sliced, rel=1e-3)


def test_matryoshka_dim_above_the_model_dim_is_a_one_line_error():
    loss = MatryoshkaLoss(MultipleNegativesRankingLoss(), [16, 4])
    with pytest.raises(EmbedforgeError, match=r"loss.matryoshka_dims \[16\] exceed .* 8"):
        loss(torch.randn(3, 8), torch.randn(3, 8))


def test_matryoshka_needs_scores_exactly_when_its_inner_loss_does():
    assert MatryoshkaLoss(CoSENTLoss(), [4]).needs_scores
    assert not MatryoshkaLoss(TripletLoss(), [4]).needs_scores


@pytest.mark.parametrize(
    "overrides,inner",
    [
        ((), MultipleNegativesRankingLoss),
        (("loss@loss.inner=cosent",), CoSENTLoss),
        (("loss@loss.inner=triplet", "loss.inner.margin=0.2"), TripletLoss),
    ],
)
def test_matryoshka_config_composes_with_any_inner_loss(overrides, inner):
    loss = build_loss("matryoshka", "loss.matryoshka_dims=[32,16]", *overrides)
    assert isinstance(loss, MatryoshkaLoss) and type(loss.inner) is inner
    assert loss.matryoshka_dims == [32, 16]
    # the eval reports the same dims by default
    cfg = compose_config("loss=matryoshka", "loss.matryoshka_dims=[32,16]", *overrides)
    assert list(cfg.eval.matryoshka_dims) == [32, 16]
    assert compose_config("loss=cosent").eval.matryoshka_dims is None


#: naive loop reference of each loss class, called with the configured loss and
#: (q, d, negatives, scores)
NAIVE = {
    MultipleNegativesRankingLoss: lambda f, q, d, n, s: naive_mnrl(
        q, d, n, f.scale, f.symmetric, f.false_negative_margin
    ),
    TripletLoss: lambda f, q, d, n, s: naive_triplet(q, d, n, f.margin),
    CosineSimilarityLoss: lambda f, q, d, n, s: naive_cosine(q, d, n, s),
    CoSENTLoss: lambda f, q, d, n, s: naive_cosent(q, d, n, s, f.scale),
    MatryoshkaLoss: naive_matryoshka,
}


@pytest.mark.parametrize("name", loss_configs())
@pytest.mark.parametrize("with_negs", [False, True])
def test_configured_loss_matches_its_naive_reference(name, with_negs):
    loss = build_loss(name)
    assert type(loss) in NAIVE, f"conf/loss/{name}.yaml: add a naive reference to NAIVE"
    g = torch.Generator().manual_seed(3)
    q, d = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    negs = torch.randn(6, 2, 8, generator=g) if with_negs else None
    s = random_scores(6, g)  # ranking losses ignore them
    expected = NAIVE[type(loss)](loss, q, d, negs, s)
    assert loss(q, d, negs, scores=s).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", loss_configs())
def test_configured_loss_follows_labels_among_gathered_docs(name):
    """Under DDP a rank's positives sit at ``labels`` among every rank's documents: moving the
    documents (and their negatives) with the labels must not change the loss."""
    loss = build_loss(name)
    g = torch.Generator().manual_seed(4)
    q, d = torch.randn(3, 8, generator=g), torch.randn(9, 8, generator=g)
    negs = torch.randn(9, 2, 8, generator=g)
    labels = torch.tensor([3, 4, 5])
    s = torch.tensor([0.2, 1.0, 0.6])  # scores belong to the queries: they do not move
    perm = torch.randperm(9, generator=g)  # new row i holds old row perm[i]
    where = torch.argsort(perm)  # old row r is now at where[r]
    moved = loss(q, d[perm], negs[perm], where[labels], s)
    assert moved.item() == pytest.approx(loss(q, d, negs, labels, s).item(), rel=1e-5)


@pytest.mark.parametrize("name", loss_configs())
def test_configured_loss_computes_in_fp32_from_half_inputs(name):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(4, 8, generator=g).to(torch.bfloat16).requires_grad_()
    d = torch.randn(4, 8, generator=g).to(torch.bfloat16)
    loss = build_loss(name)(q, d, scores=torch.tensor([1.0, 0.5, 0.0, 0.5]))
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
        (lambda: CoSENTLoss(scale=-1), "scale"),
        (lambda: CosineSimilarityLoss(similarity="l1"), "similarity"),
        (lambda: MatryoshkaLoss(TripletLoss(), [64, 0]), "matryoshka_dims"),
        (lambda: MatryoshkaLoss(TripletLoss(), [64, 32], [1.0]), "matryoshka_weights"),
        (lambda: MatryoshkaLoss(MatryoshkaLoss(TripletLoss(), [8]), [8]), "inner"),
    ],
)
def test_bad_loss_arguments_are_one_line_errors(make, needle):
    with pytest.raises(EmbedforgeError, match=needle) as e:
        make()
    assert "\n" not in str(e.value)
