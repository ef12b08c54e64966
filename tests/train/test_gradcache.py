"""Gradient caching equals plain training: same loss, same parameter gradients, for every loss
in ``conf/loss/`` (a new loss file is covered without touching this test)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from embedforge.models.encoder import Encoder
from embedforge.train.gradcache import cached_backward
from embedforge.train.module import ContrastiveModule
from tests.conftest import build_loss, loss_configs

LOSSES = loss_configs()


pytestmark = pytest.mark.usefixtures("single_torch_thread")


WORDS = (
    "contract lease tenant landlord clause termination notice payment breach warranty party".split()
)


def make_batch(b: int = 7, n_neg: int = 0) -> dict:
    """Texts of different lengths (so chunks pad differently), no duplicates; graded ``score``
    labels (with ties) for the graded losses, ignored by the ranking ones."""
    q = [
        " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2 + i % 3)) + f" q{i}" for i in range(b)
    ]
    p = [
        " ".join(WORDS[(3 * i + k) % len(WORDS)] for k in range(4 + i % 5)) + f" doc {i}"
        for i in range(b)
    ]
    batch = {"query": q, "positive": p, "score": [(i * 7 % 11) / 10 for i in range(b)]}
    if n_neg:
        batch["negatives"] = [
            [f"{WORDS[(i + j) % len(WORDS)]} other text {i} {j}" for j in range(n_neg)]
            for i in range(b)
        ]
    return batch


@functools.lru_cache(maxsize=2)
def _encoder(dropout: float) -> Encoder:
    return Encoder.tiny(seed=0, dropout=dropout)


def make_module(
    loss: str,
    dropout: float,
    mini_batch_size: int | None,
    l2sp: float = 0.0,
    overrides: tuple[str, ...] = (),
) -> ContrastiveModule:
    enc = copy.deepcopy(_encoder(dropout))
    module = ContrastiveModule(
        enc,
        build_loss(loss, *overrides),
        functools.partial(torch.optim.SGD, lr=0.1),
        mini_batch_size=mini_batch_size,
        l2sp_weight=l2sp,
    )
    if l2sp:  # move away from theta_0 so the anchor has a gradient
        with torch.no_grad():
            for i, p in enumerate(module.encoder.parameters()):
                p.add_(0.01 * torch.sin(torch.arange(p.numel(), dtype=p.dtype) + i).view_as(p))
    module.train()
    return module


def grads(module: ContrastiveModule) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.encoder.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_neg", [0, 2])
def test_cached_equals_plain_without_dropout(loss, n_neg):
    batch = make_batch(7, n_neg)
    plain, cached = make_module(loss, 0.0, None), make_module(loss, 0.0, 3)  # chunks 3+3+1
    loss_plain = plain.forward_backward(batch)
    loss_cached = cached.forward_backward(batch)
    torch.testing.assert_close(loss_cached, loss_plain, rtol=1e-5, atol=1e-6)
    assert loss_plain.item() > 0
    assert_same_grads(grads(cached), grads(plain))


def test_cached_equals_plain_matryoshka_over_a_graded_loss():
    """The wrapper truncates inside the loss, so the cached gradient on the full embeddings is exact."""
    batch = make_batch(6, 1)
    over = ("loss@loss.inner=cosent", "loss.matryoshka_dims=[32,16,8]")
    plain, cached = (make_module("matryoshka", 0.0, m, overrides=over) for m in (None, 4))
    torch.testing.assert_close(
        cached.forward_backward(batch), plain.forward_backward(batch), rtol=1e-5, atol=1e-6
    )
    assert_same_grads(grads(cached), grads(plain))


def test_cached_equals_plain_with_l2sp_anchor():
    batch = make_batch(6, 1)
    plain, cached = make_module("mnrl", 0.0, None, l2sp=0.5), make_module("mnrl", 0.0, 4, l2sp=0.5)
    plain.forward_backward(batch), cached.forward_backward(batch)
    assert_same_grads(grads(cached), grads(plain))


def test_large_loss_scale_like_fp16():
    """The cached embedding gradients are unscaled; the scaler multiplies the backward exactly once."""
    scale = 2.0**16
    batch = make_batch(8, 1)
    ref, plain, cached = (make_module("mnrl_symmetric", 0.0, m) for m in (None, None, 2))
    ref.forward_backward(batch)
    plain.forward_backward(batch, backward=lambda t: (t * scale).backward())
    cached.forward_backward(batch, backward=lambda t: (t * scale).backward())
    g_ref, g_plain, g_cached = grads(ref), grads(plain), grads(cached)
    assert_same_grads(g_cached, g_plain, rtol=1e-4, atol=1e-6 * scale)
    assert_same_grads({k: v / scale for k, v in g_cached.items()}, g_ref)


def _chunked_reference(module: ContrastiveModule, batch: dict, m: int) -> torch.Tensor:
    """Naive full-graph loss over the same chunked forward passes (what caching must reproduce)."""
    embed = module.encoder.embed
    q = torch.cat(
        [embed(batch["query"][i : i + m], "query") for i in range(0, len(batch["query"]), m)]
    )
    d = torch.cat(
        [embed(batch["positive"][i : i + m], "doc") for i in range(0, len(batch["positive"]), m)]
    )
    negatives = None
    if batch.get("negatives"):
        flat = [t for row in batch["negatives"] for t in row]
        negatives = torch.cat([embed(flat[i : i + m], "doc") for i in range(0, len(flat), m)]).view(
            len(q), -1, q.shape[1]
        )
    loss = module.contrastive_loss(q, d, negatives, module.batch_scores(batch, q.device))
    loss.backward()
    return loss.detach()


def _cached(
    module: ContrastiveModule, batch: dict, m: int, replay_rng: bool = True
) -> torch.Tensor:
    groups = [(batch["query"], "query"), (batch["positive"], "doc")]
    n = len(batch["negatives"][0]) if batch.get("negatives") else 0
    if n:
        groups.append(([t for row in batch["negatives"] for t in row], "doc"))

    scores = module.batch_scores(batch, torch.device("cpu"))

    def loss_fn(reps):
        return module.contrastive_loss(
            reps[0], reps[1], reps[2].view(len(reps[0]), n, -1) if n else None, scores
        )

    return cached_backward(module.encoder, groups, m, loss_fn, replay_rng=replay_rng)


@pytest.mark.parametrize("loss", LOSSES)
def test_cached_replays_dropout(loss):
    """With dropout on, caching equals the full graph of the same forward passes (same masks)."""
    batch = make_batch(6, 2)
    ref, cached, no_replay = (make_module(loss, 0.1, 4) for _ in range(3))
    torch.manual_seed(123)
    loss_ref = _chunked_reference(ref, batch, 4)
    torch.manual_seed(123)
    loss_cached = _cached(cached, batch, 4)
    torch.testing.assert_close(loss_cached, loss_ref, rtol=1e-5, atol=1e-6)
    assert_same_grads(grads(cached), grads(ref))
    # without replaying the RNG state the second pass draws other dropout masks: wrong gradients
    torch.manual_seed(123)
    _cached(no_replay, batch, 4, replay_rng=False)
    with pytest.raises(AssertionError):
        assert_same_grads(grads(no_replay), grads(ref))


def test_cached_step_leaves_rng_as_after_first_pass():
    module = make_module("mnrl", 0.1, 2)
    torch.manual_seed(7)
    _cached(module, make_batch(4), 2)
    after_cached = torch.rand(3)
    torch.manual_seed(7)
    with torch.no_grad():
        for i in range(0, 4, 2):
            module.encoder.embed(make_batch(4)["query"][i : i + 2], "query")
        for i in range(0, 4, 2):
            module.encoder.embed(make_batch(4)["positive"][i : i + 2], "doc")
    torch.testing.assert_close(torch.rand(3), after_cached)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["trainer.gradient_clip_val=1.0"], "module.gradient_clip_val"),
        (["trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches"),
        (["module.mini_batch_size=0"], "module.mini_batch_size"),
        (["trainer.precision=16-mixed"], "trainer.precision"),
        (
            ["module.gather_queries=true", "module.gather_across_devices=false"],
            "module.gather_queries",
        ),
        (["trainer=ddp", "trainer.devices=3", "data.batch_size=32"], "trainer.devices"),
        (["module.gradient_clip_val=-1"], "module.gradient_clip_val"),
    ],
)
def test_contradictory_settings_one_line_error(compose, overrides, needle):
    from embedforge.config import validate
    from embedforge.errors import EmbedforgeError

    with pytest.raises(EmbedforgeError, match=needle) as e:
        validate(compose("model=tiny", *overrides))
    assert "\n" not in str(e.value)


def test_large_batch_configs_validate(compose):
    from embedforge.config import validate

    cfg = compose(
        "trainer=ddp", "data.batch_size=256", "module.mini_batch_size=16", "trainer.devices=8"
    )
    validate(cfg)
    assert (
        cfg.trainer.strategy == "ddp"
        and cfg.trainer.precision == "bf16-mixed"
        and cfg.trainer.gradient_clip_val is None
    )
    assert cfg.module.gather_across_devices is True and cfg.module.gradient_clip_val == 1.0


def test_graded_loss_ranks_unscored_positives_above_their_negatives():
    """Defect: real pairs (all score 1.0) with group negatives were refused by loss=cosent as
    'degenerate', though each negative is a label-0 pair; unscored batches had no labels at all."""
    from embedforge.errors import EmbedforgeError

    module = make_module("cosent", 0.0, None)
    plain = [{"query": "q", "positive": "p", "score": 1.0}, {"query": "r", "positive": "s"}]
    with pytest.raises(EmbedforgeError, match="same label 1.0 and no negatives"):
        module.check_pairs(plain)
    module.check_pairs([{**p, "negatives": ["n"]} for p in plain])  # labels 1 and 0: fine

    batch = make_batch(5, 2)
    del batch["score"]
    torch.testing.assert_close(module.batch_scores(batch, torch.device("cpu")), torch.ones(5))
    loss = module.forward_backward(batch)
    assert torch.isfinite(loss) and loss > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    del batch["negatives"]
    assert module.batch_scores(batch, torch.device("cpu")) is None
