"""The label-free guard: a run validated on generated pairs only ships its fine-tuned weights when
the guard's check also supports it (by default: BM25 significantly ahead of the base model on the
documents' own generated queries, checked before training), and says what chose it."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.eval.retrieval import RetrievalSet
from embedforge.generate.label_free import (
    LEXICAL,
    VALIDATION,
    Guard,
    build_guard,
    lexical_margin,
    probe_set,
    score,
)
from tests.conftest import LEGAL

RSET = RetrievalSet(
    corpus={"a": "alpha clause", "b": "beta clause", "c": "gamma term"},
    queries={"q1": "alpha", "q2": "gamma"},
    qrels={"q1": {"a": 1}, "q2": {"c": 1}},
)


@pytest.fixture()
def trained(tiny_encoder):
    """A module whose weights moved from the base model's (the "last" weights), and its Base."""
    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.pipeline import Base
    from embedforge.train.module import ContrastiveModule

    module = ContrastiveModule(
        copy.deepcopy(tiny_encoder),
        MultipleNegativesRankingLoss(),
        functools.partial(torch.optim.SGD, lr=0.1),
        val_set=RSET,
        metrics=["ndcg@10"],
    )
    state = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    with torch.no_grad():
        for p in module.encoder.parameters():
            p.add_(0.05)
    return module, Base(None, {"val/ndcg@10": 0.5}, state)


CFG = OmegaConf.create({"monitor": "val/ndcg@10"})


def chosen(selected: str = "last"):
    from embedforge.pipeline import Choice

    return Choice(selected, 0.7, {"base": 0.5, "best": None, "last": 0.7})


def weights(module):
    return {k: v.clone() for k, v in module.encoder.state_dict().items()}


def test_a_signal_that_did_not_rise_ships_the_base_model(trained):
    from embedforge.pipeline import Clock, guarded

    module, base = trained
    now = score(module.encoder, RSET)
    guard = Guard("cross_strategy", RSET, base=now + 0.1)  # the base model scored higher
    choice = guarded(CFG, chosen(), guard, module, base, Clock())
    assert choice.selected == "base" and choice.value == 0.5
    assert all(torch.equal(base.state[k], v) for k, v in module.encoder.state_dict().items())
    r = choice.label_free
    assert r["supports"] is False and r["shipped"] == "base" and r["overruled"] == "last"
    assert r["finetuned"] == pytest.approx(now, abs=1e-6) and r["delta"] == pytest.approx(-0.1)
    assert r["n_queries"] == 2 and "did not train on" in r["measures"]


def test_a_signal_that_rose_ships_the_fine_tuned_weights(trained):
    from embedforge.pipeline import Clock, guarded

    module, base = trained
    before = weights(module)
    guard = Guard("cross_strategy", RSET, base=score(module.encoder, RSET) - 0.1)
    choice = guarded(CFG, chosen(), guard, module, base, Clock())
    assert choice.selected == "last" and choice.value == 0.7
    assert all(torch.equal(before[k], v) for k, v in module.encoder.state_dict().items())
    assert choice.label_free["supports"] is True and choice.label_free["shipped"] == "last"
    # a rise must exceed min_delta
    strict = Guard("cross_strategy", RSET, base=score(module.encoder, RSET) - 0.1, min_delta=0.2)
    assert guarded(CFG, chosen(), strict, module, base, Clock()).selected == "base"


def test_a_signal_that_rose_ships_the_interpolation_at_the_guards_alpha(trained):
    from embedforge.pipeline import Clock, guarded
    from embedforge.train.wise import interpolate

    module, base = trained
    last = weights(module)
    guard = Guard("cross_strategy", RSET, base=score(module.encoder, RSET) - 0.1, alpha=0.5)
    choice = guarded(CFG, chosen(), guard, module, base, Clock())
    want = interpolate(base.state, last, 0.5)
    assert all(torch.equal(want[k], v) for k, v in module.encoder.state_dict().items())
    assert choice.selected == "wise" and choice.label_free["alpha"] == 0.5
    assert choice.label_free["interpolated"] == "last" and choice.label_free["shipped"] == "wise"
    # its value is the validation score of the shipped (interpolated) weights
    assert choice.value == pytest.approx(module.run_validation()["val/ndcg@10"])


def test_an_alpha_chosen_by_eval_wise_alphas_is_not_interpolated_again(trained):
    from embedforge.pipeline import Clock, guarded

    module, base = trained
    before = weights(module)
    guard = Guard("cross_strategy", RSET, base=score(module.encoder, RSET) - 0.1, alpha=0.5)
    choice = guarded(CFG, chosen("wise"), guard, module, base, Clock())
    assert choice.selected == "wise" and "alpha" not in choice.label_free
    assert all(torch.equal(before[k], v) for k, v in module.encoder.state_dict().items())


def test_without_the_base_weights_the_guard_records_but_does_not_act(trained):
    from embedforge.pipeline import Clock, guarded

    module, base = trained
    base.state = None  # eval.keep_best=false: the trained weights ship
    before = weights(module)
    guard = Guard("cross_strategy", RSET, base=2.0)
    choice = guarded(CFG, chosen(), guard, module, base, Clock())
    assert choice.selected == "last" and choice.label_free["supports"] is False
    assert all(torch.equal(before[k], v) for k, v in module.encoder.state_dict().items())


def test_a_base_model_already_selected_needs_no_check(trained):
    from embedforge.pipeline import Clock, guarded

    module, base = trained
    guard = Guard("cross_strategy", RSET, base=2.0)
    guard.check = lambda enc: pytest.fail("checked although validation kept the base model")
    choice = guarded(CFG, chosen("base"), guard, module, base, Clock())
    r = choice.label_free
    assert choice.selected == "base" and r["checked"] is False and r["shipped"] == "base"
    assert r["signal"] == "cross_strategy" and r["trust"]["runs"] == 28
    assert guarded(CFG, chosen(), None, module, base, Clock()).label_free is None


def test_build_guard_scores_the_base_model_on_held_out_strategies(tiny_encoder):
    chunks = [
        {"id": f"c{i}", "title": f"Lease {i} rent", "text": f"tenant pays rent {i} " * 12}
        for i in range(20)
    ]
    guard = build_guard("cross_strategy", chunks, {"span"}, tiny_encoder, probe_docs=20)
    assert guard is not None and "span" not in guard.info["strategies"]
    assert guard.base == pytest.approx(score(tiny_encoder, guard.rset))
    with pytest.raises(EmbedforgeError, match="unknown 'nope'"):
        build_guard("nope", chunks, set(), tiny_encoder)


LEASES = [
    {
        "id": f"c{i}",
        "title": f"Lease {w} schedule",
        "text": f"the tenant of the {w} premises pays rent monthly and the landlord repairs the {w}"
        f" roof; notices about the {w} go to the agent in writing " * 3,
    }
    for i, w in enumerate(
        "harbor meadow quarry orchard foundry granary tannery vineyard brewery mill"
        " smithy bakery chapel dairy forge kiln lodge manor pier wharf".split()
    )
]


class Oracle:
    """A base model that already knows the corpus: each probe query lands on its own passage."""

    def __init__(self, probe):
        self.row = {p["query"]: i for i, p in enumerate(probe.pairs)}
        self.row |= {d: i for i, d in enumerate(probe.docs)}
        self.n = len(probe.docs)

    def encode(self, texts, kind, batch_size=64, show_progress=False):
        out = np.zeros((len(texts), self.n), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, self.row[t]] = 1.0
        return out


def test_the_lexical_margin_is_the_base_models_ndcg_minus_bm25s_on_the_probe_queries(
    tiny_encoder,
):
    probe = probe_set(LEASES, 20, seed=0)
    weak = lexical_margin(probe, tiny_encoder)  # random weights: word overlap wins
    assert weak["n_queries"] == len(probe.pairs) > 10 and weak["probe_docs"] == len(probe.docs)
    assert weak["base"] == pytest.approx(
        score(
            tiny_encoder,
            RetrievalSet(
                corpus=probe.corpus(),
                queries={f"q{i}": p["query"] for i, p in enumerate(probe.pairs)},
                qrels={f"q{i}": {f"d{i}": 1} for i in range(len(probe.pairs))},
            ),
        ),
        abs=1e-6,
    )
    assert weak["margin"] == pytest.approx(weak["base"] - weak["bm25"], abs=1e-6)
    assert weak["bm25"] > weak["base"] and weak["high"] < 0  # BM25 significantly ahead
    strong = lexical_margin(probe, Oracle(probe))
    assert strong["base"] == 1.0 and strong["bm25"] == weak["bm25"] and strong["low"] >= 0


def test_the_lexical_guard_decides_before_training_and_ships_only_where_bm25_leads(
    tiny_encoder, trained
):
    from embedforge.pipeline import Clock, guarded

    probe = probe_set(LEASES, 20, seed=0)
    ahead = build_guard(LEXICAL, LEASES, set(), tiny_encoder, probe_docs=20, alpha=0.25)
    assert ahead.decided is True and ahead.rset is None and ahead.info["high"] < 0
    not_ahead = build_guard(LEXICAL, LEASES, set(), Oracle(probe), probe_docs=20, alpha=0.25)
    assert not_ahead.decided is False
    module, base = trained
    before = weights(module)
    kept = guarded(CFG, chosen(), not_ahead, module, base, Clock())
    assert kept.selected == "base" and kept.label_free["overruled"] == "last"
    assert kept.label_free["supports"] is False and kept.label_free["margin"] >= 0
    assert all(torch.equal(base.state[k], v) for k, v in module.encoder.state_dict().items())
    module.encoder.load_state_dict(before)
    shipped = guarded(CFG, chosen(), ahead, module, base, Clock())
    assert shipped.selected == "wise" and shipped.label_free["alpha"] == 0.25
    assert shipped.label_free["signal"] == LEXICAL and shipped.label_free["trust"]["corpora"] == 4
    # a margin the documents give no query for: no guard
    assert build_guard(LEXICAL, [], set(), tiny_encoder) is None


def test_the_validation_guard_adds_no_check(tiny_encoder):
    guard = build_guard(VALIDATION, [], set(), tiny_encoder, alpha=0.5)
    assert guard.rset is None and guard.alpha == 0.5
    r = guard.check(tiny_encoder)
    assert r["supports"] is True and r["trust"]["runs"] == 28 and "delta" not in r


def test_bad_guard_signal_fails_validation(compose):
    from embedforge.config import validate

    with pytest.raises(EmbedforgeError, match="eval.label_free_guard.signal"):
        validate(compose("eval.label_free_guard.signal=bogus"))
    validate(compose("eval.label_free_guard.signal=null"))


def label_free_run(compose, tmp_path, *overrides) -> dict:
    """A short tiny-model run on legal-summarization (offline pairs, held-out generated
    validation: a label-free run); its metrics.json."""
    from tests.test_pipeline import run_pipeline

    _, m = run_pipeline(
        compose,
        tmp_path,
        "data=beir",
        f"data.path={LEGAL}",
        "data.val_max_docs=200",
        "trainer.max_steps=4",
        "data.batch_size=8",
        *overrides,
    )
    return m


def test_a_label_free_run_records_and_reports_its_guard(compose, tmp_path):
    """End to end: offline pairs, held-out generated validation: the guard runs and is reported."""
    m = label_free_run(
        compose,
        tmp_path,
        "eval.label_free_guard.probe_docs=60",
        "eval.label_free_guard.signal=cross_strategy",
        "eval.keep_best=false",  # the trained weights are always checked (and shipped)
    )
    r = m["label_free"]
    assert r["signal"] == "cross_strategy" and r["shipped"] == m["selected"] == "last"
    assert r["supports"] == (r["delta"] > 0) and r["n_queries"] > 0
    assert set(r["strategies"]).isdisjoint(m["generation"]["by_strategy"])
    assert r["delta"] == pytest.approx(r["finetuned"] - r["base"], abs=2e-6)
    assert {"label_free_guard", "label_free_check"} <= set(m["seconds"])
    report = (tmp_path / "report.md").read_text()
    assert "**Model chosen without real queries" in report and "data.eval_path" in report
    assert "Label-free guard: cross_strategy" in report and "Spearman +0.18" in report


def test_a_label_free_run_says_what_chose_its_model(compose, tmp_path):
    m = label_free_run(compose, tmp_path, "optim.lr=1e-2", "data.val_max_base=null")
    r = m["label_free"]
    assert r["signal"] == LEXICAL and r["trust"]["runs"] == 28
    report = (tmp_path / "report.md").read_text()
    assert (
        "**Model chosen without real queries: validation on generated pairs, checked against BM25"
        " on the documents' own queries (over 28 label-free runs on 4 corpora" in report
    )
    assert "label_free_guard" in m["seconds"]  # measured before training
    # the tiny random model's generated validation does not rise: the base model ships, unchecked
    assert m["selected"] == "base" and r["checked"] is False and r["shipped"] == "base"
    assert "not needed, validation already kept the base model (before training: base" in report
    assert r["high"] < 0 and r["n_queries"] > 0  # what the check measured is kept all the same


def test_by_default_a_label_free_run_ships_a_quarter_of_the_way_from_the_base_model(
    compose, trained
):
    from embedforge.pipeline import Clock, guarded
    from embedforge.report import _label_free
    from embedforge.train.wise import interpolate

    settings = compose().eval.label_free_guard
    assert settings.signal == LEXICAL and settings.alpha == 0.25
    module, base = trained
    last = weights(module)
    guard = build_guard(LEXICAL, LEASES, set(), module.encoder, alpha=float(settings.alpha))
    assert guard.decided  # the random tiny model is behind BM25
    choice = guarded(CFG, chosen(), guard, module, base, Clock())
    want = interpolate(base.state, last, 0.25)
    assert all(torch.equal(want[k], v) for k, v in module.encoder.state_dict().items())
    assert choice.selected == "wise" and choice.label_free["alpha"] == 0.25
    line = _label_free(choice.label_free)[0]
    assert "the interpolation 0.25 x fine-tuned + 0.75 x base is shipped" in line
    assert "shipping the 0.25 interpolation only when it held shipped 0 harmful" in line
    assert "BM25 ahead" in line and "4 corpora" in line


def test_a_run_with_real_validation_has_no_guard(compose, tmp_path):
    from tests.test_pipeline import run_pipeline

    _, m = run_pipeline(
        compose, tmp_path, "data.chapters=[1]", "trainer.max_steps=2", "data.batch_size=8"
    )
    assert m["val_set"]["kind"] == "dev split" and m["label_free"] is None
    assert "without real queries" not in (tmp_path / "report.md").read_text()
