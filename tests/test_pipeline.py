"""End to end with the tiny model on real data; overfitting; bad input through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from embedforge.errors import EmbedforgeError
from tests.conftest import LEGAL, ROOT, make_beir

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
    assert m["training"]["epochs"] == pytest.approx(6 * 8 / m["n_train_pairs"], abs=1e-3)
    assert m["val_set"]["name"].endswith(
        "/val"
    )  # held out of training pairs, not the reported split
    assert value == pytest.approx(m["monitor_value"])
    assert (tmp_path / "report.md").read_text().count("| ndcg@10 |") == 1
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


def cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["data=beir", "data.path=/nonexistent/dataset"], "dataset directory not found"),
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
    pairs = [json.loads(x) for x in (tmp_path / "train_pairs.jsonl").read_text().splitlines()]
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
