"""The activation budget: over it, layers are recomputed in backward (gradient checkpointing) with
the same gradients bit for bit (same dropout masks), and the estimate follows the batch's shape."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from embedforge.losses import MultipleNegativesRankingLoss
from embedforge.models.encoder import Encoder
from embedforge.train.module import ContrastiveModule
from tests.train.test_gradcache import assert_same_grads, grads, make_batch

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(autouse=True)
def keep_this_process_malloc(monkeypatch):
    """Over budget the module fixes glibc's mmap threshold for the process (tests/train/
    test_memory.py checks that); here it would slow the rest of the test session."""
    calls = []
    monkeypatch.setattr(
        "embedforge.train.module.return_freed_blocks", lambda: calls.append(1) or True
    )
    return calls


@functools.lru_cache(maxsize=1)
def _encoder() -> Encoder:
    return Encoder.tiny(seed=0, dropout=0.1)


def module(budget, mini_batch_size=None) -> ContrastiveModule:
    m = ContrastiveModule(
        copy.deepcopy(_encoder()),
        MultipleNegativesRankingLoss(),
        functools.partial(torch.optim.SGD, lr=0.1),
        mini_batch_size=mini_batch_size,
        activation_budget_gb=budget,
    )
    m.train()
    return m


def checkpointing(m: ContrastiveModule) -> bool:
    return bool(m.encoder._transformer().model.is_gradient_checkpointing)


def recomputed_blocks(m: ContrastiveModule) -> list[bool]:
    """Each transformer layer: is it recomputed in backward?"""
    return [
        bool(layer.gradient_checkpointing) for layer in m.encoder._transformer().model.encoder.layer
    ]


@pytest.mark.parametrize("mini_batch_size", [None, 3])
def test_over_budget_recomputes_layers_with_the_same_gradients(
    mini_batch_size, keep_this_process_malloc
):
    batch = make_batch(6, 2)
    plain, recomputed = module(None, mini_batch_size), module(1e-9, mini_batch_size)
    assert plain.plan_activations(batch)["checkpointing"] is False and not checkpointing(plain)
    assert not keep_this_process_malloc  # under budget: the allocator is left alone
    plan = recomputed.plan_activations(batch)
    assert plan["checkpointing"] is True and checkpointing(recomputed)
    assert plan["recomputed_layers"] == "2/2" and recomputed_blocks(recomputed) == [True, True]
    assert plan["returns_freed_blocks"] is True and keep_this_process_malloc == [1]
    assert plan["estimate_gb"] >= 0 and plan["budget_gb"] == 0.0
    torch.manual_seed(5)  # dropout on: recomputation must replay the same masks
    loss_plain = plain.forward_backward(batch)
    torch.manual_seed(5)
    loss_recomputed = recomputed.forward_backward(batch)
    assert torch.equal(loss_plain, loss_recomputed)
    assert_same_grads(grads(recomputed), grads(plain), rtol=0, atol=0)


def test_a_budget_between_recomputes_only_the_layers_it_must():
    batch = make_batch(6, 2)
    estimate = module(None).plan_activations(batch)["estimate_gb"] * 2**30
    # room for one of the two layers: the lower one is recomputed
    plain, partial = module(None), module(estimate / 2**30 * 0.99)
    plan = partial.plan_activations(batch)
    assert plan["recomputed_layers"] == "1/2" and recomputed_blocks(partial) == [True, False]
    torch.manual_seed(5)
    loss_plain = plain.forward_backward(batch)
    torch.manual_seed(5)
    assert torch.equal(loss_plain, partial.forward_backward(batch))
    assert_same_grads(grads(partial), grads(plain), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("estimate", "budget", "layers", "recomputed"),
    [
        (10, None, 6, 0),  # no budget
        (10, 10, 6, 0),  # fits
        (12, 10, 6, 1),  # 2 per layer: 5 kept
        (12, 2.5, 6, 5),  # 1 kept
        (12, 1.9, 6, 6),  # not even one layer fits: all recomputed (peak: one layer's)
        (60, 30, 12, 6),
    ],
)
def test_recompute_layers_keeps_what_fits(estimate, budget, layers, recomputed):
    from embedforge.train.module import recompute_layers

    n = recompute_layers(estimate, budget, layers)
    assert n == recomputed
    if budget is not None and n:  # the kept layers fit, one more would not
        per = estimate / layers
        assert n == layers or (layers - n) * per <= budget < (layers - n + 1) * per


def test_under_budget_and_auto_on_cpu_keep_activations():
    batch = make_batch(6, 2)
    for budget in ("auto", 10.0):
        m = module(budget)
        plan = m.plan_activations(batch)
        assert plan["checkpointing"] is False and not checkpointing(m)
    assert module("auto").budget_bytes() == 1.5 * 2**30  # CPU


def test_estimate_grows_with_batch_length_and_negatives():
    enc = _encoder()
    one = enc.activation_bytes([(1, 64)])
    assert enc.activation_bytes([(8, 64)]) == pytest.approx(8 * one)
    assert enc.activation_bytes([(1, 128)]) > 2 * one  # attention grows with L^2
    with_negatives = enc.activation_bytes([(8, 16), (8, 64), (8, 64)])
    assert with_negatives > enc.activation_bytes([(8, 16), (8, 64)])
    # the step of a batch over a chunked one: chunks bound the estimate
    batch = make_batch(6, 2)
    chunked = module(None, 2).plan_activations(batch)["estimate_gb"]
    assert 0 < chunked < module(None).plan_activations(batch)["estimate_gb"]


@pytest.mark.parametrize("bad", ["lots", 0, -1, True])
def test_bad_budget_is_a_one_line_error(compose, bad):
    from embedforge.config import validate
    from embedforge.errors import EmbedforgeError

    with pytest.raises(EmbedforgeError, match="module.activation_budget_gb") as e:
        validate(compose("model=tiny", f"module.activation_budget_gb={str(bad).lower()}"))
    assert "\n" not in str(e.value)


def test_a_model_without_checkpointing_keeps_its_activations(monkeypatch, caplog):
    m = module(1e-9)
    hf = m.encoder._transformer().model
    monkeypatch.setattr(type(hf), "supports_gradient_checkpointing", False)
    plan = m.plan_activations(make_batch(4))
    assert plan["checkpointing"] is False and plan["returns_freed_blocks"] is False
    assert not checkpointing(m) and "does not support gradient checkpointing" in caplog.text
