"""WiSE-FT weight interpolation: the endpoints are the base and fine-tuned weights, the chosen
alpha is the validation argmax (ties: nearest the base), LoRA adapters interpolate exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from embedforge.errors import EmbedforgeError
from embedforge.train.wise import interpolate, wise_select


def _states(encoder):
    base = {k: v.clone() for k, v in encoder.state_dict().items()}
    ft = {k: (v + 0.5 if v.is_floating_point() else v.clone()) for k, v in base.items()}
    return base, ft


def test_alpha_endpoints_are_base_and_finetuned(tiny_encoder):
    base, ft = _states(tiny_encoder)
    assert all(torch.equal(interpolate(base, ft, 0.0)[k], base[k]) for k in base)
    assert all(torch.equal(interpolate(base, ft, 1.0)[k], ft[k]) for k in base)
    mid = interpolate(base, ft, 0.25)
    k = next(k for k, v in base.items() if v.is_floating_point())
    assert torch.allclose(mid[k], base[k] + 0.125)


def test_integer_buffers_and_lora_a_come_from_the_finetuned_model():
    base = {
        "ids": torch.arange(3),
        "x.lora_A.default.weight": torch.zeros(2),
        "x.lora_B.default.weight": torch.zeros(2),
    }
    ft = {
        "ids": torch.arange(3) + 1,
        "x.lora_A.default.weight": torch.ones(2),
        "x.lora_B.default.weight": torch.ones(2),
    }
    out = interpolate(base, ft, 0.5)
    assert torch.equal(out["ids"], ft["ids"])
    assert torch.equal(out["x.lora_A.default.weight"], ft["x.lora_A.default.weight"])
    assert torch.equal(out["x.lora_B.default.weight"], torch.full((2,), 0.5))


def test_mismatched_keys_are_an_error():
    with pytest.raises(EmbedforgeError, match="differ in keys"):
        interpolate({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)


def _alpha_of(encoder, base, ft) -> float:
    """The alpha the encoder's weights sit at (read off one floating-point tensor)."""
    k = next(k for k, v in base.items() if v.is_floating_point())
    d = (encoder.state_dict()[k] - base[k]).flatten()[0] / (ft[k] - base[k]).flatten()[0]
    return round(float(d), 6)


@pytest.mark.parametrize(
    "peak, want",
    [(0.5, 0.5), (0.75, 0.75), (0.0, 0.0), (1.0, 1.0)],
)
def test_chosen_alpha_is_the_validation_argmax_and_is_loaded(tiny_encoder, peak, want):
    enc = copy.deepcopy(tiny_encoder)
    base, ft = _states(enc)
    enc.load_state_dict(ft)
    seen = []

    def validate():
        a = _alpha_of(enc, base, ft)
        seen.append(a)
        return {"val/ndcg@10": 1.0 - (a - peak) ** 2}

    curve = wise_select(enc, base, [1.0, 0.0, 0.25, 0.5, 0.75, 0.5], validate, "val/ndcg@10")
    assert curve.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.alpha == want and curve.value == max(curve.val)
    assert curve.val[curve.alphas.index(want)] == pytest.approx(1.0)
    assert _alpha_of(enc, base, ft) == want  # the encoder holds the chosen interpolation


def test_known_values_are_not_scored_again_and_ties_take_the_smaller_alpha(tiny_encoder):
    enc = copy.deepcopy(tiny_encoder)
    base, ft = _states(enc)
    enc.load_state_dict(ft)
    calls = []

    def validate():
        calls.append(_alpha_of(enc, base, ft))
        return {"val/ndcg@10": 0.5}  # flat curve: every alpha ties

    curve = wise_select(
        enc, base, [0.0, 0.5, 1.0], validate, "val/ndcg@10", known={0.0: 0.5, 1.0: 0.5}
    )
    assert calls == [0.5] and curve.alpha == 0.0
    assert all(torch.equal(enc.state_dict()[k], base[k]) for k in base)
