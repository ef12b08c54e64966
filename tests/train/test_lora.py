"""LoRA (module.lora): only adapters train, gradient caching matches plain training, the saved
model has the adapters merged (plain SentenceTransformer, same embeddings), WiSE interpolates the
merged weights exactly."""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch

from embedforge.losses import MultipleNegativesRankingLoss
from embedforge.train.module import ContrastiveModule
from embedforge.train.wise import interpolate
from tests.train.test_gradcache import make_batch

pytestmark = pytest.mark.usefixtures("single_torch_thread")

LORA = {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["query", "key", "value", "dense"]}
TEXTS = ["alpha clause on termination", "beta term", "payment within thirty days of notice"]


def lora_module(encoder, mini_batch_size=None, **lora) -> ContrastiveModule:
    return ContrastiveModule(
        copy.deepcopy(encoder),
        MultipleNegativesRankingLoss(),
        functools.partial(torch.optim.SGD, lr=0.5),
        mini_batch_size=mini_batch_size,
        lora={**LORA, **lora},
    )


def _randomize_b(encoder) -> None:
    """lora_B starts at 0 (a no-op adapter): give it values, as training would."""
    torch.manual_seed(0)
    with torch.no_grad():
        for k, p in encoder.named_parameters():
            if "lora_B" in k:
                p.normal_(0, 0.2)


def test_lora_starts_as_the_base_model_and_trains_only_adapters(tiny_encoder):
    module = lora_module(tiny_encoder)
    enc = module.encoder
    assert np.array_equal(enc.encode(TEXTS, "doc"), tiny_encoder.encode(TEXTS, "doc"))
    trainable = [k for k, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.5)
    module.forward_backward(make_batch(6))
    opt.step()
    after = enc.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_B" in k for k in changed)  # B moves first (A's grad is 0 at B=0)


def test_gradient_caching_with_lora_equals_plain():
    from tests.train.test_gradcache import _encoder

    # without dropout: plain and cached passes draw masks for different batch shapes
    plain = lora_module(_encoder(0.0), dropout=0.0)
    _randomize_b(plain.encoder)  # non-zero B: A gets gradients too
    cached = copy.deepcopy(plain)  # the same adapters (A is initialised at random)
    cached.mini_batch_size = 2
    for m in (plain, cached):
        m.encoder.train()
        torch.manual_seed(1)
        m.forward_backward(make_batch(6))
    grads = {k: p.grad for k, p in plain.encoder.named_parameters() if p.requires_grad}
    for k, p in cached.encoder.named_parameters():
        if p.requires_grad and grads[k] is None:  # BERT's unused pooler (frozen at setup)
            assert p.grad is None and ".pooler." in k
        elif p.requires_grad:
            assert torch.allclose(p.grad, grads[k], atol=1e-6), k
    assert any(g.abs().sum() > 0 for k, g in grads.items() if "lora_A" in k and g is not None)


def test_saved_model_is_merged_and_loads_without_peft(tiny_encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = lora_module(tiny_encoder).encoder
    _randomize_b(enc)
    want = enc.encode(TEXTS, "doc")
    assert not np.allclose(want, tiny_encoder.encode(TEXTS, "doc"), atol=1e-3)  # B matters
    enc.save(tmp_path / "model")
    assert not (tmp_path / "model" / "adapter_config.json").exists()
    st = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert not any("lora" in k for k in st.state_dict())
    assert type(st[0].auto_model).__name__ == "BertModel"
    np.testing.assert_allclose(st.encode(TEXTS), want, atol=1e-5)
    assert enc.has_lora  # saving merged a copy; the encoder keeps its adapters
    assert json.loads((tmp_path / "model" / "config.json").read_text())["model_type"] == "bert"


def test_wise_on_lora_interpolates_the_merged_weights(tiny_encoder):
    enc = lora_module(tiny_encoder).encoder
    base = {k: v.clone() for k, v in enc.state_dict().items()}
    w_base = {k: v.clone() for k, v in enc.merged_model().state_dict().items()}
    _randomize_b(enc)
    with torch.no_grad():  # training moves A too: interpolating A as well would be wrong
        for k, p in enc.named_parameters():
            if "lora_A" in k:
                p.mul_(1.5)
    ft = {k: v.clone() for k, v in enc.state_dict().items()}
    w_ft = enc.merged_model().state_dict()
    enc.load_state_dict(interpolate(base, ft, 0.25))
    w_mid = enc.merged_model().state_dict()
    for k in w_mid:
        assert torch.allclose(w_mid[k], 0.75 * w_base[k] + 0.25 * w_ft[k], atol=1e-6), k


def test_lora_config_composes_and_builds(compose, tiny_encoder):
    from embedforge.config import validate
    from embedforge.eval.retrieval import RetrievalSet
    from embedforge.pipeline import build_module

    cfg = compose("model=tiny", "module.lora.r=16")
    validate(cfg)
    module = build_module(cfg, copy.deepcopy(tiny_encoder), RetrievalSet({}, {}, {}))
    assert module.encoder.has_lora
    assert not build_module(
        compose("model=tiny"), copy.deepcopy(tiny_encoder), None
    ).encoder.has_lora
