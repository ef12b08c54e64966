"""End to end with the tiny model on real data; overfitting; bad input through the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from embedforge.errors import EmbedforgeError
from tests.conftest import CUAD, LEGAL, ROOT, make_beir

SCHEMA = {"ndcg@10", "recall@5", "mrr@10", "recall@100"}


def run_pipeline(compose, tmp_path, *overrides):
    from embedforge.pipeline import train

    cfg = compose(
        "model=tiny",
        "trainer=debug",
        "logger=none",
        f"paths.output_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *overrides,
    )
    value = train(cfg)
    return value, json.loads((tmp_path / "metrics.json").read_text())


def test_end_to_end_tiny_on_legal_summarization(compose, tmp_path):
    # legal-summarization has only a test split: offline pairs from its corpus, validation held out
    value, m = run_pipeline(
        compose,
        tmp_path,
        "data=beir",
        f"data.path={LEGAL}",
        "data.val_max_docs=200",
        "trainer.max_steps=6",
        "data.batch_size=8",
    )
    assert set(m["baseline"]) == SCHEMA and set(m["finetuned"]) == SCHEMA
    assert m["eval_split"] == "test" and m["n_queries"] == 290 and m["n_docs"] == 445
    assert m["n_train_pairs"] > 0 and set(m["seconds"]) >= {
        "train",
        "baseline_eval",
        "finetuned_eval",
        "total",
    }
    assert m["pairs_by_source"] == {"offline": m["n_train_pairs"]}
    assert m["training"]["steps"] == 6
    batches = -(-m["n_train_pairs"] // 8)  # one optimizer step per batch, the last one partial
    assert m["training"]["epochs"] == pytest.approx(6 / batches, abs=1e-3)
    assert m["training"]["epochs_completed"] == 0
    assert m["val_set"]["name"].endswith(
        "/val"
    )  # held out of training pairs, not the reported split
    # the returned and recorded value is the validation score of the model that was shipped
    if m["selected"] == "wise":  # label-free: the guard's interpolation with the base, validated
        assert value == m["monitor_value"] and 0 < m["label_free"]["alpha"] < 1
    else:
        slot = {"base": "base", "best_checkpoint": "best", "last": "last"}[m["selected"]]
        assert value == m["monitor_value"] == pytest.approx(m["val"][slot])
    assert (tmp_path / "report.md").read_text().count("| ndcg@10 |") == 1
    # no dev split, no real pairs: validation says it is held out of generated pairs, hardened
    assert m["val_set"]["kind"] == "held-out synthetic" and "guard" in m["val_set"]
    assert "validation: **held-out synthetic**" in (tmp_path / "report.md").read_text()
    assert m["generation"]["pairs"] >= m["n_train_pairs"] and "copyable_dropped" in m["generation"]
    # per-query evidence: every scored query with its text, the plot, the report section
    from embedforge.io import read_jsonl

    rows, pq = read_jsonl(tmp_path / "per_query.jsonl"), m["per_query"]
    assert len(rows) == 290 and all(r["query"] and set(r["finetuned"]) == SCHEMA for r in rows)
    assert pq["n_better"] + pq["n_worse"] + pq["n_same"] == 290
    assert (tmp_path / pq["plot"]).stat().st_size > 1000
    assert "## Per-query changes" in (tmp_path / "report.md").read_text()
    # every delta with its paired 95% interval and test, over the same 290 queries
    sig = m["significance"]
    assert set(sig) == SCHEMA and all(s["n"] == 290 for s in sig.values())
    assert all(s["low"] <= m["delta"][k] <= s["high"] for k, s in sig.items())
    assert m["ship"]["within_noise"] == (not sig["ndcg@10"]["significant"])
    assert "| 95% CI (paired bootstrap) |" in (tmp_path / "report.md").read_text()
    # metrics.json is exactly RunMetrics: every key, in order, and nothing else
    from embedforge.runs import RunMetrics

    assert list(RunMetrics.load(tmp_path / "metrics.json").to_dict().items()) == list(m.items())
    assert list(m) == [f.name for f in dataclasses.fields(RunMetrics)]
    # the saved model reloads with sentence-transformers and reproduces the reported NDCG@10
    from sentence_transformers import SentenceTransformer

    from embedforge.data.sources import BeirSource
    from embedforge.eval.retrieval import evaluate
    from embedforge.models.encoder import Encoder

    st = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert st.prompts == {"query": "", "document": ""}
    res = evaluate(Encoder(st), BeirSource(str(LEGAL), val_split=None).eval_set(), list(SCHEMA))
    assert res.metrics["ndcg@10"] == pytest.approx(m["finetuned"]["ndcg@10"], abs=1e-6)


def test_overfit_one_batch_loss_goes_down(tiny_encoder):
    from embedforge.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    enc = tiny_encoder
    enc.train()
    queries = [
        f"what is clause {w}" for w in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    ]
    docs = [
        f"the {w} clause says the party shall pay"
        for w in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    ]
    loss_fn = MultipleNegativesRankingLoss()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = loss_fn(enc.embed(queries, "query"), enc.embed(docs, "doc"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_no_training_pairs_is_an_error(compose, tmp_path):
    data = make_beir(
        tmp_path / "ds",
        [{"_id": f"d_{i}", "text": f"t {i}"} for i in range(5)],
        [{"_id": "q", "text": "x"}],
        {"test": [("q", "d_1", 1)]},
    )
    with pytest.raises(EmbedforgeError, match="no training pairs"):
        run_pipeline(compose, tmp_path, "data=beir", f"data.path={data}", "data.generate=false")
    # two-word passages without titles: the offline generator has nothing to work with
    with pytest.raises(EmbedforgeError, match="generator made none from .*min_passage_words"):
        run_pipeline(compose, tmp_path, "data=beir", f"data.path={data}")


def cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["data=beir", "data.path=/nonexistent/dataset"],
            "data.path: no such file or folder: /nonexistent/dataset",
        ),
        (
            ["module.mini_batch_size=8", "trainer.accumulate_grad_batches=2"],
            "accumulate_grad_batches",
        ),
    ],
)
def test_cli_bad_input_one_line_error(tmp_path, args, needle):
    r = cli("model=tiny", "logger=none", f"hydra.run.dir={tmp_path}", *args)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and needle in err[0]
    assert "Traceback" not in r.stderr


def test_hard_negatives_and_triplet_end_to_end(compose, tmp_path):
    # the tiny model's cosines all sit near 1, so the relative margin filter is off here
    _, m = run_pipeline(
        compose,
        tmp_path,
        "data=beir",
        f"data.path={LEGAL}",
        "data.val_max_docs=100",
        "data.hard_negatives.num=2",
        "data.hard_negatives.margin=null",
        "loss=triplet",
        "trainer.max_steps=2",
        "data.batch_size=4",
        "eval.baseline=false",
    )
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert all(len(p["negatives"]) == 2 and p["positive"] not in p["negatives"] for p in pairs)
    assert m["hard_negatives"]["pairs"] == len(pairs)
    assert (tmp_path / "pair_diagnostics.png").exists()


def test_baseline_eval_is_cached_per_model_and_eval_set(compose, tmp_path, tiny_encoder):
    from embedforge.eval.retrieval import RetrievalSet
    from embedforge.pipeline import baseline_eval

    cfg = compose("model=tiny", f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path}")
    rset = RetrievalSet(
        corpus={"a": "alpha clause", "b": "beta clause"},
        queries={"q": "alpha"},
        qrels={"q": {"a": 1}},
    )
    first = baseline_eval(cfg, tiny_encoder, rset)
    second = baseline_eval(cfg, tiny_encoder, rset)
    assert "cached" not in first.seconds and second.seconds == {"cached": 0.0}
    assert second.metrics == first.metrics
    rset.qrels = {"q": {"b": 1}}
    assert (
        "cached" not in baseline_eval(cfg, tiny_encoder, rset).seconds
    )  # another eval set: recomputed


def test_baseline_cache_misses_on_what_the_config_does_not_show(compose, tmp_path, tiny_encoder):
    """Defect: the key was the model config and parameter sums rounded to 6 decimals, so a prompt
    resolved from the saved model, another max length or a small weight change served a stale
    baseline."""
    import copy

    from embedforge.eval.retrieval import RetrievalSet
    from embedforge.pipeline import baseline_eval

    cfg = compose("model=tiny", f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path}")
    rset = RetrievalSet({"a": "alpha clause", "b": "beta clause"}, {"q": "alpha"}, {"q": {"a": 1}})
    baseline_eval(cfg, tiny_encoder, rset)

    def cached(enc) -> bool:
        return "cached" in baseline_eval(cfg, enc, rset).seconds

    assert cached(copy.deepcopy(tiny_encoder))
    prompted = copy.deepcopy(tiny_encoder)
    prompted.query_prefix = "query: "  # e.g. resolved from a saved model, the config says null
    shorter = copy.deepcopy(tiny_encoder)
    shorter.model.max_seq_length = tiny_encoder.max_seq_length // 2
    nudged = copy.deepcopy(tiny_encoder)
    with torch.no_grad():
        w = next(nudged.parameters())
        w.view(-1)[0] += 1e-4  # a swap that keeps the parameter sum to 6 decimals
        w.view(-1)[1] -= 1e-4
    assert not cached(prompted) and not cached(shorter) and not cached(nudged)


# ---------------------------------------------------------------------------------------- select
class _Checkpoint:
    def __init__(self, score, path):
        self.best_model_score = None if score is None else torch.tensor(score)
        self.best_model_path = str(path) if path else ""


@pytest.fixture()
def module_and_base(compose, tiny_encoder):
    import copy
    import functools

    from embedforge.eval.retrieval import RetrievalSet
    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.pipeline import Base
    from embedforge.train.module import ContrastiveModule

    rset = RetrievalSet(
        corpus={"a": "alpha clause", "b": "beta clause", "c": "gamma term"},
        queries={"q1": "alpha", "q2": "gamma"},
        qrels={"q1": {"a": 1}, "q2": {"c": 1}},
    )
    module = ContrastiveModule(
        copy.deepcopy(tiny_encoder),
        MultipleNegativesRankingLoss(),
        functools.partial(torch.optim.SGD, lr=0.1),
        val_set=rset,
        metrics=["ndcg@10"],
    )
    state = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    return module, Base(None, module.run_validation(), state), compose("model=tiny")


def _perturb(module, by: float) -> None:
    with torch.no_grad():
        for p in module.encoder.parameters():
            p.add_(by)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_select_loads_a_better_checkpoint_strictly(module_and_base, tmp_path):
    from embedforge.pipeline import Clock, select

    module, base, cfg = module_and_base
    base.state = None  # the base model is not a candidate (eval.keep_best=false)
    _perturb(module, 0.01)
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "epoch": 0}, path)
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    _perturb(module, 0.05)  # the "last" weights
    last = module.run_validation()["val/ndcg@10"]
    choice = select(cfg, module, _Checkpoint(last + 0.1, path), base, Clock())
    assert choice.selected == "best_checkpoint" and choice.value == pytest.approx(last + 0.1)
    assert _same(saved, module.state_dict()) and choice.val["last"] == last


def test_select_keeps_last_weights_unless_the_checkpoint_beats_them(module_and_base, tmp_path):
    from embedforge.pipeline import Clock, select

    module, base, cfg = module_and_base
    base.state = None
    _perturb(module, 0.05)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    last = module.run_validation()["val/ndcg@10"]
    # a checkpoint as good as the last weights (up to fp32 logging noise) is not loaded
    choice = select(cfg, module, _Checkpoint(last, tmp_path / "missing.ckpt"), base, Clock())
    assert choice.selected == "last" and _same(before, module.state_dict())


def test_select_ties_keep_the_base_model(module_and_base):
    from embedforge.pipeline import Clock, select

    module, base, cfg = module_and_base
    _perturb(module, 0.05)
    base.val = {
        "val/ndcg@10": module.run_validation()["val/ndcg@10"]
    }  # a tie with the last weights
    choice = select(cfg, module, _Checkpoint(None, None), base, Clock())
    assert choice.selected == "base" and _same(base.state, module.encoder.state_dict())


def test_select_with_wise_ships_the_validation_best_interpolation(module_and_base, tmp_path):
    from embedforge.pipeline import Clock, select
    from embedforge.report import write_report
    from embedforge.runs import RunMetrics
    from embedforge.train.wise import interpolate

    module, base, cfg = module_and_base
    cfg.eval.wise_alphas = [0.25, 0.5, 0.75]
    _perturb(module, 0.05)  # the "last" weights: the fine-tuned endpoint (no better checkpoint)
    last_state = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    probe = next(k for k, v in last_state.items() if v.is_floating_point())

    def validate():  # peaks at alpha 0.75, read off the weights
        w = module.encoder.state_dict()[probe].flatten()[0]
        a = float((w - base.state[probe].flatten()[0]) / 0.05)
        return {"val/ndcg@10": 1.0 - (a - 0.75) ** 2}

    module.run_validation = validate
    base.val = {"val/ndcg@10": 1.0 - 0.75**2}  # what alpha 0 scores
    choice = select(cfg, module, _Checkpoint(None, None), base, Clock())
    assert choice.selected == "wise" and choice.wise.alpha == 0.75
    assert choice.wise.alphas == [0.0, 0.25, 0.5, 0.75, 1.0] and choice.wise.endpoint == "last"
    assert choice.value == pytest.approx(1.0) == max(choice.wise.val)
    assert _same(interpolate(base.state, last_state, 0.75), module.encoder.state_dict())
    m = RunMetrics(
        task="t",
        finetuned={"ndcg@10": 0.5},
        monitor="val/ndcg@10",
        selected=choice.selected,
        val=choice.val,
        wise=choice.wise.to_dict(),
        ship={"min_gain": 0.01, "passed": False},
        eval_set={"name": "e"},
        val_set={"name": "v", "n_queries": 2, "n_docs": 3},
    )
    m.write(tmp_path / "metrics.json")
    assert RunMetrics.load(tmp_path / "metrics.json").wise["alpha"] == 0.75
    report = write_report(tmp_path, m).read_text()
    assert "alpha **0.75** shipped" in report and "| val/ndcg@10 | 0.4375 |" in report


def test_select_with_wise_keeps_the_base_model_on_a_flat_curve(module_and_base):
    from embedforge.pipeline import Clock, select

    module, base, cfg = module_and_base
    cfg.eval.wise_alphas = [0.5]
    _perturb(module, 0.05)
    module.run_validation = lambda: dict(base.val)  # every alpha ties with the base model
    choice = select(cfg, module, _Checkpoint(None, None), base, Clock())
    assert choice.selected == "base" and choice.wise.alpha == 0.0
    assert _same(base.state, module.encoder.state_dict())


def test_select_refuses_a_checkpoint_that_does_not_fit(module_and_base, tmp_path):
    from embedforge.pipeline import Clock, select

    module, base, cfg = module_and_base
    base.state = None
    state = dict(module.state_dict())
    state.pop(next(iter(state)))
    torch.save({"state_dict": state}, tmp_path / "best.ckpt")
    with pytest.raises(EmbedforgeError, match="does not fit the module"):
        select(cfg, module, _Checkpoint(2.0, tmp_path / "best.ckpt"), base, Clock())


# ---------------------------------------------------------------------------------------- config
class RecordingModule(torch.nn.Module):
    """Stands in for ContrastiveModule: records what ``build_module`` passes."""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs


def test_module_is_built_from_its_target_with_the_runtime_objects(compose, tiny_encoder):
    from embedforge.eval.retrieval import RetrievalSet
    from embedforge.pipeline import build_module

    cfg = compose(
        "model=tiny",
        "module._target_=tests.test_pipeline.RecordingModule",
        "module.l2sp_weight=0.5",
    )
    rset = RetrievalSet(corpus={"a": "x"}, queries={"q": "y"}, qrels={"q": {"a": 1}})
    module = build_module(cfg, tiny_encoder, rset)
    kw = module.kwargs
    # (by name: pytest imports this file under another module name than the _target_ does)
    assert type(module).__name__ == "RecordingModule" and kw["l2sp_weight"] == 0.5
    assert kw["encoder"] is tiny_encoder and kw["val_set"] is rset  # passed as is, not as config
    assert kw["metrics"] == list(cfg.eval.metrics) and kw["optimizer"].func is torch.optim.AdamW


def test_trainer_gets_the_configured_callbacks(compose, tmp_path):
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    from embedforge.pipeline import build_trainer
    from embedforge.train.resume import ResumableTraining

    base = ["trainer=debug", f"paths.output_dir={tmp_path}"]
    trainer = build_trainer(compose(*base, "logger=csv"))
    ckpt = trainer.checkpoint_callback
    assert isinstance(ckpt, ModelCheckpoint) and ckpt.monitor == "val/ndcg@10"
    assert ckpt.dirpath == str(tmp_path / "checkpoints")
    assert any(isinstance(c, ResumableTraining) for c in trainer.callbacks)
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    quiet = build_trainer(compose(*base, "logger=none"))
    assert not any(isinstance(c, LearningRateMonitor) for c in quiet.callbacks)
    with pytest.raises(EmbedforgeError, match="callbacks.checkpoint"):
        build_trainer(compose(*base, "logger=none", "~callbacks.checkpoint"))


def test_progress_false_also_silences_lightnings_bar(compose, tmp_path, monkeypatch):
    from embedforge import progress
    from embedforge.pipeline import build_trainer

    base = ["trainer=debug", "logger=none", f"paths.output_dir={tmp_path}"]
    monkeypatch.setattr(progress, "_enabled", True)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)  # on a terminal: Lightning's bar
    assert build_trainer(compose(*base, "trainer.enable_progress_bar=true")).progress_bar_callback
    progress.configure(False)
    assert (
        build_trainer(compose(*base, "trainer.enable_progress_bar=true")).progress_bar_callback
        is None
    )


def test_ddp_ranks_above_zero_read_rank0_pairs_instead_of_building(compose, tmp_path, monkeypatch):
    """Defect: every rank generated its own pairs (N LLM bills, one cache file written by N
    processes, and different pair lists, i.e. different batch counts: a hang)."""
    from embedforge.io import write_jsonl
    from embedforge.pipeline import PAIRS_FILE, Clock, build_pairs

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"rank 1 used data.{name}: it must not build pairs")

    rows = [{"query": "q", "positive": "p", "negatives": ["n"], "source": "offline"}]
    write_jsonl(tmp_path / PAIRS_FILE, rows)
    monkeypatch.setenv("LOCAL_RANK", "1")
    train_set = build_pairs(compose(f"paths.output_dir={tmp_path}"), Untouchable(), None, Clock())
    assert train_set.pairs == rows


def test_matryoshka_end_to_end_reports_each_dimension(compose, tmp_path):
    """loss=matryoshka: metrics.json and report.md hold NDCG@10 of each truncated dimension."""
    _, m = run_pipeline(
        compose,
        tmp_path,
        "data=beir",
        f"data.path={LEGAL}",
        "data.val_max_docs=100",
        "loss=matryoshka",
        "loss.matryoshka_dims=[32,16,8]",
        "trainer.max_steps=2",
        "data.batch_size=4",
    )
    mat = m["matryoshka"]
    assert list(mat["baseline"]) == list(mat["finetuned"]) == ["32", "16", "8"]
    assert all(set(v) == SCHEMA for part in mat.values() for v in part.values())
    # the full dimension (32 = the tiny model's) reproduces the untruncated evaluation
    assert mat["finetuned"]["32"]["ndcg@10"] == pytest.approx(m["finetuned"]["ndcg@10"], abs=1e-6)
    assert mat["baseline"]["32"]["ndcg@10"] == pytest.approx(m["baseline"]["ndcg@10"], abs=1e-6)
    assert mat["finetuned"]["8"] != mat["finetuned"]["32"]
    report = (tmp_path / "report.md").read_text()
    assert "NDCG@10 per embedding dimension" in report and "| 8 |" in report


def _graded_beir(root):
    """A toy BEIR set with graded train qrels (0-3) and dev/test splits."""
    corpus = [
        {"_id": f"d{i}", "title": "", "text": f"clause {i} about topic {i % 7}"} for i in range(40)
    ]
    queries = [
        {"_id": f"q{i}", "text": f"which clause covers topic {i % 7} number {i}"} for i in range(40)
    ]
    train = [(f"q{i}", f"d{(i + k) % 40}", 3 - k) for i in range(24) for k in range(3)]
    dev = [(f"q{i}", f"d{i}", 1) for i in range(24, 32)]
    test = [(f"q{i}", f"d{i}", 1) for i in range(32, 40)]
    return make_beir(root, corpus, queries, {"train": train, "dev": dev, "test": test})


def test_graded_loss_trains_on_scored_beir_pairs(compose, tmp_path):
    beir = _graded_beir(tmp_path / "beir")
    _, m = run_pipeline(
        compose,
        tmp_path / "run",
        "data=beir",
        f"data.path={beir}",
        "data.train_queries=true",
        "data.generate=false",
        "loss=cosent",
        "trainer.max_steps=2",
        "data.batch_size=8",
        "eval.baseline=false",
    )
    pairs = [json.loads(x) for x in (tmp_path / "run" / "pairs.jsonl").read_text().splitlines()]
    assert {round(p["score"], 3) for p in pairs} == {1.0, 0.667, 0.333}
    assert m["training"]["loss"] == "CoSENTLoss" and m["training"]["steps"] == 2


def test_graded_loss_on_unscored_pairs_is_an_early_one_line_error(compose, tmp_path):
    with pytest.raises(EmbedforgeError, match="needs graded pairs.*no 'score'.*loss=mnrl") as e:
        run_pipeline(
            compose,
            tmp_path,
            "data=beir",
            f"data.path={LEGAL}",
            "loss=cosine",
            "data.val_max_docs=100",
        )
    assert "\n" not in str(e.value)
    assert not (tmp_path / "metrics.json").exists()


def test_mix_keeps_every_real_pair_and_caps_the_generated_ones():
    from embedforge.pipeline import mix_pairs

    real = [{"query": f"r{i}", "positive": f"p{i}", "source": "real"} for i in range(800)]
    syn = [{"query": f"s{i}", "positive": f"g{i}", "source": "offline"} for i in range(500)]
    mixed = mix_pairs(real, syn, 1, 3, 0)  # 800 real want 2,400 generated: only 500 exist
    assert sum(p["source"] == "real" for p in mixed) == 800 and len(mixed) == 1300
    mixed = mix_pairs(real[:100], syn, 1, 3, 0)  # 100 real : 300 of the 500 generated
    assert sum(p["source"] == "real" for p in mixed) == 100 and len(mixed) == 400
    assert len(mix_pairs(real, syn, 0, 1, 0)) == 500 and len(mix_pairs(real, syn, 1, 0, 0)) == 800


def test_icd10_demo_is_real_only_and_its_mix_recipe_mixes_title_terms(compose):
    cfg = compose()
    assert cfg.data.generate is False and cfg.data.train_queries
    mix = compose("experiment=icd10_mix")
    assert mix.data.generate is True and mix.generator._target_.endswith("OfflineGenerator")
    assert (mix.data.mix_real, mix.data.mix_synthetic) == (1, 3)
    assert list(mix.generator.strategies) == ["title_terms"] and mix.data.name == "icd10"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.val_max_base=1.5", "data.val_max_base"),
        ("generator.strategies=[titles]", "generator.strategies"),
        ("generator.probe.mrr_band=[0.9,0.1]", "generator.probe.mrr_band"),
    ],
)
def test_bad_generation_settings_fail_validation(compose, override, needle):
    from embedforge.config import validate

    with pytest.raises(EmbedforgeError, match=needle):
        validate(compose(override, "data.generate=true"))  # the demo is real-only by default


def test_group_dense_batches_end_to_end_on_cuad(compose, tmp_path):
    """`data.group_batches=true` (experiment=cuad's layout) trains on the real pairs without drawn
    negatives and records how grouped its batches were in metrics.json."""
    _, m = run_pipeline(
        compose,
        tmp_path,
        "data=beir",
        f"data.path={CUAD}",
        "data.train_queries=true",
        "data.generate=false",
        "data.group_batches=true",
        "data.max_train_pairs=200",
        "data.eval_max_queries=20",
        "data.eval_max_docs=120",
        "data.val_max_queries=20",
        "data.val_max_docs=120",
        "data.batch_size=8",
        "trainer.max_steps=2",
    )
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 200 and not any(p.get("negatives") for p in pairs)
    batches = m["training"]["batches"]
    assert batches["layout"] == "group-dense" and batches["groups"] > 10
    assert batches["groups_per_batch"] < batches["shuffled_groups_per_batch"]
