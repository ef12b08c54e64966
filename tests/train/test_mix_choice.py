"""Real validation chooses between the real pairs alone and the real + generated mix: the
generated pairs stay only when they validate better, the base weights and random state come back,
the choice is recorded, kept for a resumed run, and skipped where validation is not real."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from embedforge.data.validation import DEV_SPLIT, HELD_OUT_SYNTHETIC
from embedforge.eval.retrieval import EvalResult, RetrievalSet
from embedforge.train.mix_choice import (
    CHOICE_FILE,
    MIXED,
    REAL_ONLY,
    candidates,
    choose_mix,
    continuation,
    first_validation_step,
    probe,
    probe_steps,
    schedule_steps,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

WORDS = (
    "apple river guitar tiger castle pepper rocket violin forest copper lemon harbor silver"
    " garden desert candle bridge falcon marble winter"
).split()


def doc(i: int) -> str:
    return f"{WORDS[i]} {WORDS[i]} field notes"


def pairs(shift: int, source: str, copies: int = 1) -> list[dict]:
    """``about <word i>`` -> document ``i + shift``: shift 0 poses the validation task, 1 the
    opposite of it."""
    n = len(WORDS)
    return [
        {
            "query": f"about {WORDS[i]} {'please ' * c}",
            "positive": doc((i + shift) % n),
            "source": source,
        }
        for c in range(copies)
        for i in range(n)
    ]


def val_set(kind: str = DEV_SPLIT) -> RetrievalSet:
    n = len(WORDS)
    return RetrievalSet(
        corpus={f"d{i}": doc(i) for i in range(n)},
        queries={f"q{i}": f"tell me about {WORDS[i]}" for i in range(n)},
        qrels={f"q{i}": {f"d{i}": 1} for i in range(n)},
        name="toy/dev",
        info={"kind": kind},
    )


def setup_run(compose, tiny_encoder, out, *overrides):
    """A tiny run's config and module (a copy of the tiny encoder: the base weights)."""
    from embedforge.pipeline import build_module

    cfg = compose(
        "model=tiny",
        "trainer=debug",
        "logger=none",
        "optim.lr=3e-3",
        "data.batch_size=8",
        "data.mix_select_steps=12",
        "module.activation_budget_gb=null",
        f"paths.output_dir={out}",
        *overrides,
    )
    return cfg, build_module(cfg, copy.deepcopy(tiny_encoder), val_set())


@pytest.fixture()
def run(compose, tiny_encoder, tmp_path):
    return setup_run(compose, tiny_encoder, tmp_path)


def fresh(cfg, module):
    """A new module around the run's encoder, as the pipeline builds one for each probe."""
    from embedforge.pipeline import build_module

    return lambda: build_module(cfg, module.encoder, module.val_set)


def batches(cfg):
    """Serves pairs as the run's training does (``pipeline.train_datamodule`` without a source)."""
    from embedforge.train.datamodule import PairDataModule

    return lambda chosen: PairDataModule(chosen, cfg.data.batch_size, cfg.seed)


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.encoder.state_dict().items()}


def fake_probe(scores: dict[int, list[float]]):
    """A probe that scores each candidate (known by its number of pairs) with ``scores`` per
    validation query, and moves the weights as training would."""

    def probe(cfg, module, datamodule, steps, schedule, save_to=None):
        with torch.no_grad():
            for p in module.encoder.parameters():
                p.add_(0.01)
        if save_to is not None:
            save_to.parent.mkdir(parents=True, exist_ok=True)
            save_to.write_text("checkpoint")
        n = len(datamodule.pairs)
        per_query = {f"q{i}": {"ndcg@10": v} for i, v in enumerate(scores[n])}
        mean = sum(scores[n]) / len(per_query)
        return EvalResult({"ndcg@10": mean}, per_query, len(per_query), 0, 20, {})

    return probe


@pytest.mark.parametrize(
    ("real_score", "mixed_score", "chosen"),
    [(0.8, 0.6, REAL_ONLY), (0.6, 0.8, MIXED), (0.7, 0.7, REAL_ONLY)],  # a tie keeps real only
)
def test_the_pairs_that_validate_better_train_the_run(
    run, monkeypatch, real_score, mixed_score, chosen
):
    cfg, module = run
    mixed = pairs(0, "real") + pairs(1, "offline", copies=3)
    scores = {20: [real_score] * 20, 80: [mixed_score] * 20}
    monkeypatch.setattr("embedforge.train.mix_choice.probe", fake_probe(scores))
    before = weights(module)
    kept, record = choose_mix(
        cfg, module, mixed, module.val_set, 1, fresh(cfg, module), batches(cfg)
    )
    assert record["chosen"] == chosen
    assert kept == (mixed if chosen == MIXED else [p for p in mixed if p["source"] == "real"])
    tried = record["tried"]
    assert tried[REAL_ONLY] == {"pairs": 20, "val/ndcg@10": pytest.approx(real_score)}
    assert tried[MIXED] == {"pairs": 80, "val/ndcg@10": pytest.approx(mixed_score)}
    delta = record["mixed_minus_real"]
    assert delta["delta"] == pytest.approx(mixed_score - real_score) and delta["n"] == 20
    assert record["steps_each"] == 12 and record["extra_steps"] == 24
    after = weights(module)  # each probe and the run start from the base weights
    assert all(torch.equal(before[k], after[k]) for k in before)
    saved = json.loads((Path(cfg.paths.output_dir) / CHOICE_FILE).read_text())
    assert saved["chosen"] == chosen


def test_a_probe_trains_its_steps_from_the_given_weights_and_scores_validation(run, monkeypatch):
    from embedforge.train.module import ContrastiveModule

    cfg, module = run
    steps = []
    step = ContrastiveModule.training_step
    monkeypatch.setattr(
        ContrastiveModule, "training_step", lambda self, b, i: steps.append(i) or step(self, b, i)
    )
    before = weights(module)
    data = batches(cfg)(pairs(0, "real") + pairs(1, "offline"))
    result = probe(cfg, fresh(cfg, module)(), data, 5, 20)
    assert len(steps) == 5
    after = weights(module)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert result.n_queries == 20 and set(result.per_query) == set(module.val_set.queries)
    assert 0 <= result.metrics["ndcg@10"] <= 1


def test_a_resumed_run_trains_on_its_earlier_choice_without_probing(run, monkeypatch):
    cfg, module = run
    mixed = pairs(0, "real") + pairs(1, "offline", copies=3)
    monkeypatch.setattr(
        "embedforge.train.mix_choice.probe", fake_probe({20: [0.8] * 20, 80: [0.6] * 20})
    )
    _, first = choose_mix(cfg, module, mixed, module.val_set, 1, fresh(cfg, module), batches(cfg))
    monkeypatch.setattr(
        "embedforge.train.mix_choice.probe", lambda *a, **k: pytest.fail("probed again")
    )
    cfg.resume = True
    kept, again = choose_mix(
        cfg, module, mixed, module.val_set, 1, fresh(cfg, module), batches(cfg)
    )
    assert again == json.loads(json.dumps(first)) and len(kept) == 20


def offline(shift: int, copies: int = 1) -> list[dict]:
    """Generated pairs as the offline generator tags them (the pairs the lexical check speaks for)."""
    return [{**p, "strategy": "keyphrase"} for p in pairs(shift, "offline", copies)]


def margin_record(low: float, high: float) -> dict:
    """What ``label_free.mix_check`` returns for a margin interval ``[low, high]``."""
    return {"signal": "lexical_margin", "n_queries": 50, "probe_docs": 60, "base": 0.5,
            "bm25": 0.5 - (low + high) / 2, "margin": (low + high) / 2, "low": low, "high": high,
            "bm25_ahead": high < 0}  # fmt: skip


def test_the_real_pairs_alone_unprobed_when_bm25_is_not_significantly_ahead(run, monkeypatch):
    cfg, module = run
    monkeypatch.setattr("embedforge.train.mix_choice.probe", lambda *a, **k: pytest.fail("probed"))
    mixed = pairs(0, "real") + offline(1, copies=3)
    asked = []
    checked = margin_record(-0.02, 0.01)  # the interval spans 0: BM25 not significantly ahead
    before = weights(module)
    kept, record = choose_mix(
        cfg, module, mixed, module.val_set, 1, fresh(cfg, module), batches(cfg),
        lambda given: asked.append(given) or checked,
    )  # fmt: skip
    assert asked == [mixed] and kept == [p for p in mixed if p["source"] == "real"]
    assert record["chosen"] == REAL_ONLY and record["decided_by"] == "lexical_margin"
    assert record["lexical_margin"] == checked and record["extra_steps"] == 0
    assert record["pairs"] == {REAL_ONLY: 20, MIXED: 80} and continuation(record) is None
    after = weights(module)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((Path(cfg.paths.output_dir) / CHOICE_FILE).read_text()) == record


def test_validation_chooses_when_bm25_is_significantly_ahead(run, monkeypatch):
    cfg, module = run
    scores = {20: [0.6] * 20, 80: [0.8] * 20}
    monkeypatch.setattr("embedforge.train.mix_choice.probe", fake_probe(scores))
    mixed = pairs(0, "real") + offline(1, copies=3)
    checked = margin_record(-0.15, -0.05)
    kept, record = choose_mix(
        cfg, module, mixed, module.val_set, 1, fresh(cfg, module), batches(cfg), lambda _: checked
    )
    assert kept == mixed and record["chosen"] == MIXED and record["decided_by"] == "validation"
    assert record["lexical_margin"] == checked and record["extra_steps"] == 24


@pytest.mark.parametrize(
    "case",
    ["off", "no generated pairs", "generated only", "synthetic validation", "ddp"],
)
def test_no_choice_where_there_is_nothing_to_choose_or_no_real_validation(run, monkeypatch, case):
    cfg, module = run
    monkeypatch.setattr("embedforge.train.mix_choice.probe", lambda *a, **k: pytest.fail("probed"))
    given = pairs(0, "real") + pairs(1, "offline")
    vset, world = module.val_set, 1
    if case == "off":
        cfg.data.mix_select_steps = 0
    elif case == "no generated pairs":
        given = pairs(0, "real")
    elif case == "generated only":
        given = pairs(1, "offline")
    elif case == "synthetic validation":
        vset = val_set(HELD_OUT_SYNTHETIC)
    else:
        world = 2
    kept, record = choose_mix(cfg, module, given, vset, world, fresh(cfg, module), batches(cfg))
    assert kept is given and record is None


def test_probe_length_and_the_runs_schedule(compose):
    assert probe_steps("auto", 60) == 15 and probe_steps("auto", 20) == 10
    assert probe_steps("auto", 6) == 6 and probe_steps(7, 60) == 7
    assert probe_steps(0, 60) == 0 and probe_steps(None, 60) == 0
    assert candidates([{"query": "a", "positive": "b"}] * 3) is None  # untagged pairs are real


@pytest.mark.parametrize(
    ("trainer", "n_batches", "steps", "first_val"),
    [
        (["trainer.max_epochs=1", "trainer.max_steps=60"], 400, 60, 50),  # every 50 steps
        (["trainer.max_epochs=1", "trainer.max_steps=60"], 40, 40, 50),  # one epoch ends first
        (["trainer.max_epochs=2", "trainer.max_steps=-1"], 40, 80, 50),
        (["trainer.max_epochs=-1", "trainer.max_steps=7"], 3, 7, 50),
        (
            [
                "trainer.max_epochs=3",
                "trainer.max_steps=-1",
                "trainer.val_check_interval=0.5",
                "trainer.check_val_every_n_epoch=1",
            ],
            10,
            30,
            5,
        ),
        (["trainer.max_epochs=1", "trainer.val_check_interval='00:00:10:00'"], 10, 10, 1),
        (
            [
                "trainer.max_epochs=1",
                "trainer.max_steps=-1",
                "trainer.val_check_interval=1.0",
                "trainer.check_val_every_n_epoch=2",
            ],
            10,
            10,
            20,
        ),
        (
            ["trainer.max_epochs=1", "trainer.max_steps=-1", "+trainer.limit_val_batches=0"],
            10,
            10,
            None,
        ),
    ],
)
def test_the_runs_schedule_and_first_validation_before_a_trainer_exists(
    compose, trainer, n_batches, steps, first_val
):
    """``schedule_steps`` is what Lightning's ``estimated_stepping_batches`` gives the run's
    module (the probe's LR schedule must be the run's for the run to continue from it)."""

    cfg = compose(*trainer)
    assert schedule_steps(cfg.trainer, n_batches) == steps
    assert first_validation_step(cfg.trainer, n_batches) == first_val
    assert lightning_estimate(cfg, n_batches) == steps


class Estimated(Exception):
    pass


def lightning_estimate(cfg, n_batches: int) -> int:
    """Lightning's ``estimated_stepping_batches`` for a fit of ``n_batches`` batches an epoch
    under ``cfg.trainer`` (read where the run's module reads it, then the fit is stopped)."""
    import pytorch_lightning as pl

    from embedforge.config import build

    class Reader(pl.LightningModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.zeros(n_batches, 1), batch_size=1)

        def training_step(self, batch, batch_idx):
            raise AssertionError("not reached")

        def configure_optimizers(self):
            raise Estimated(self.trainer.estimated_stepping_batches)

    trainer = build(
        cfg.trainer,
        logger=False,
        enable_checkpointing=False,
        callbacks=[],
        enable_progress_bar=False,
    )
    with pytest.raises(Estimated) as e:
        trainer.fit(Reader())
    return e.value.args[0]


@pytest.mark.parametrize("bad", ["lots", -1, 2.5, True])
def test_bad_probe_length_is_a_one_line_error(compose, bad):
    from embedforge.config import validate
    from embedforge.errors import EmbedforgeError

    with pytest.raises(EmbedforgeError, match="data.mix_select_steps") as e:
        validate(compose("model=tiny", f"data.mix_select_steps={str(bad).lower()}"))
    assert "\n" not in str(e.value)


def cuad_mix_run(compose, run: Path, *overrides: str) -> dict:
    """A tiny run on CUAD's real train queries plus offline pairs of 40 of its documents, dev-split
    validation: its ``metrics.json``."""
    from tests.conftest import CUAD
    from tests.test_pipeline import run_pipeline

    return run_pipeline(
        compose,
        run,
        "data=beir",
        f"data.path={CUAD}",
        "data.train_queries=true",
        "data.generate=true",
        "data.gen_max_docs=40",
        "data.eval_max_queries=20",
        "data.eval_max_docs=120",
        "data.val_max_queries=20",
        "data.val_max_docs=120",
        "data.batch_size=8",
        *overrides,
    )[1]


def test_a_run_with_real_and_generated_pairs_chooses_reports_and_trains_on_its_choice(
    compose, tmp_path
):
    run = tmp_path / "run"
    m = cuad_mix_run(
        compose,
        run,
        "data.mix_select_steps=2",
        "data.group_batches=true",  # as experiment=real_synthetic_mix (built on experiment=cuad)
        "trainer.val_check_interval=3",  # after the probes' 2 steps: the run continues the winner
    )
    assert m["training"]["batches"]["layout"] == "group-dense"
    choice = m["mix_choice"]
    assert choice["chosen"] in (REAL_ONLY, MIXED) and choice["extra_steps"] == 2
    assert choice["continue_from"] and not Path(choice["continue_from"]).exists()  # used, removed
    assert not list((run / "mix_probe").glob("*.ckpt"))  # nor is the other probe's kept
    assert m["training"]["steps"] == 4  # the run's 4 steps: the probe's 2, then 2 more
    assert choice["val_set"] == m["val_set"]["name"] and m["val_set"]["kind"] == DEV_SPLIT
    trained = [json.loads(x) for x in (run / "pairs.jsonl").read_text().splitlines()]
    assert len(trained) == choice["tried"][choice["chosen"]]["pairs"] == m["n_train_pairs"]
    assert ({p["source"] for p in trained} == {"real"}) == (choice["chosen"] == REAL_ONLY)
    assert m["pairs_by_source"]["real"] == choice["tried"][REAL_ONLY]["pairs"]
    assert "mix_choice" in m["seconds"] and (run / CHOICE_FILE).is_file()
    assert "Training pairs chosen on validation" in (run / "report.md").read_text()
    # asked first (the default data.mix_select_check): the tiny random model is far behind BM25
    assert choice["decided_by"] == "validation" and choice["lexical_margin"]["high"] < 0


def test_a_run_whose_corpus_gives_offline_pairs_nothing_to_teach_trains_on_real_pairs_unprobed(
    compose, tmp_path, monkeypatch
):
    checked = margin_record(-0.01, 0.03)
    monkeypatch.setattr("embedforge.generate.label_free.corpus_margin", lambda *a, **k: checked)
    monkeypatch.setattr("embedforge.train.mix_choice.probe", lambda *a, **k: pytest.fail("probed"))
    run = tmp_path / "run"
    m = cuad_mix_run(compose, run, "trainer.max_steps=3")
    choice = m["mix_choice"]
    assert choice["chosen"] == REAL_ONLY and choice["decided_by"] == "lexical_margin"
    assert choice["lexical_margin"] == checked and m["training"]["steps"] == 3
    trained = [json.loads(x) for x in (run / "pairs.jsonl").read_text().splitlines()]
    assert {p["source"] for p in trained} == {"real"} and len(trained) == m["n_train_pairs"]
    assert len(trained) == choice["pairs"][REAL_ONLY] < choice["pairs"][MIXED]
    report = (run / "report.md").read_text()
    assert "chosen without probes" in report and "margin -0.0100" not in report
    assert "margin +0.0100 [-0.0100, +0.0300]" in report


@pytest.mark.parametrize("bad", ["bm25", "yes"])
def test_an_unknown_mix_check_is_a_one_line_error(compose, bad):
    from embedforge.config import validate
    from embedforge.errors import EmbedforgeError

    with pytest.raises(EmbedforgeError, match="data.mix_select_check") as e:
        validate(compose("model=tiny", f"data.mix_select_check={bad}"))
    assert "\n" not in str(e.value)


def test_rng_kept_restores_every_random_state():
    import random

    import numpy as np

    from embedforge.pipeline import rng_kept

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with rng_kept():
        random.random(), np.random.rand(), torch.rand(3)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(
        torch.rand(1), expected[2]
    )


def test_each_probe_trains_on_the_batches_the_run_would_serve(run, monkeypatch):
    """``datamodule(pairs)`` (``pipeline.train_datamodule``: the run's sampler, seed and layout)
    serves each probe its own candidate."""
    from embedforge.train.datamodule import PairDataModule

    cfg, module = run
    cfg.data.mix_select_steps = 2
    mixed = pairs(0, "real") + pairs(1, "offline")
    made, served = [], []

    def datamodule(chosen):
        made.append(batches(cfg)(chosen))
        return made[-1]

    loader = PairDataModule.train_dataloader
    monkeypatch.setattr(
        PairDataModule, "train_dataloader", lambda self: served.append(self) or loader(self)
    )
    choose_mix(cfg, module, mixed, module.val_set, 1, fresh(cfg, module), datamodule)
    assert sorted(len(dm.pairs) for dm in made) == [20, 40]
    assert {id(dm) for dm in served} == {id(dm) for dm in made}


def test_the_winning_probe_is_kept_for_the_run_when_it_ends_before_the_first_validation(
    run, monkeypatch
):
    cfg, module = run
    cfg.trainer.val_check_interval = 20  # the probes' 12 steps end before it
    mixed = pairs(0, "real") + pairs(1, "offline", copies=3)
    monkeypatch.setattr(
        "embedforge.train.mix_choice.probe", fake_probe({20: [0.6] * 20, 80: [0.8] * 20})
    )
    _, record = choose_mix(cfg, module, mixed, module.val_set, 1, fresh(cfg, module), batches(cfg))
    assert record["chosen"] == MIXED and record["extra_steps"] == 12  # only the other probe's
    kept = Path(record["continue_from"])
    assert kept.is_file() and sorted(kept.parent.glob("*.ckpt")) == [kept]  # the other removed
    assert continuation(record) == str(kept)
    kept.unlink()  # gone (pruned by hand): the run starts from the base weights instead
    assert continuation(record) is None and continuation(None) is None


def test_a_run_continued_from_its_winning_probe_ends_as_a_run_on_those_pairs_from_the_start(
    compose, tiny_encoder, tmp_path
):
    """The probe trains the run's first steps (its batches, LR schedule, per-step seeds), so the
    continued run's weights equal, bit for bit, those of a run given the chosen pairs."""
    from embedforge.pipeline import build_trainer

    def setup(name: str):
        steps = ["data.mix_select_steps=3", "trainer.max_steps=7", "trainer.val_check_interval=4"]
        return setup_run(compose, tiny_encoder, tmp_path / name, *steps)

    mixed = pairs(0, "real") + pairs(1, "offline", copies=3)
    cfg, module = setup("continued")
    kept, record = choose_mix(
        cfg, module, mixed, module.val_set, 1, fresh(cfg, module), batches(cfg)
    )
    assert record["continue_from"] and record["steps_each"] == 3
    continued = build_trainer(cfg)
    trained = []
    module.on_train_batch_start = lambda batch, i: trained.append(i)
    continued.fit(module, datamodule=batches(cfg)(kept), ckpt_path=continuation(record))
    assert len(trained) == 4  # only the steps after the probe's 3

    cfg_b, plain = setup("from_the_start")
    from_start = build_trainer(cfg_b)
    from_start.fit(plain, datamodule=batches(cfg_b)(kept))
    assert continued.global_step == from_start.global_step == 7
    a, b = weights(module), weights(plain)
    assert all(torch.equal(a[k], b[k]) for k in a)
    best = [t.checkpoint_callback.best_model_score for t in (continued, from_start)]
    assert best[0] is not None and torch.equal(best[0], best[1])  # the step-4 validation ran
