"""Headlines that cannot mislead (issue 26): a run measured on generated queries says so in the
report's first line, its final log line and ``metrics.json``, and the ship gate says what it gated
on; a run without in-training validation says so instead of "best checkpoint nan"."""

from __future__ import annotations

import json
import logging

import pytest

from embedforge.data.validation import GENERATED_EVAL_NOTE

TOPICS = [
    "payment", "termination", "warranty", "liability", "notice", "assignment", "insurance",
    "audit", "renewal", "escrow", "indemnity", "arbitration", "confidentiality", "licensing",
    "delivery", "acceptance", "subcontracting", "publicity", "severability", "jurisdiction",
]  # fmt: skip


@pytest.fixture()
def documents(tmp_path):
    """A folder of short titled documents: no labelled queries at all."""
    root = tmp_path / "docs"
    root.mkdir()
    for i, t in enumerate(TOPICS * 2):
        (root / f"{t}_{i}.md").write_text(
            f"# {t.title()} terms of agreement {i}\n\nThe {t} provisions of contract {i} require"
            f" each party to act within {i + 3} business days of a written request, and the {t}"
            f" obligations survive expiry for {i + 1} years unless both parties agree otherwise"
            " in a signed amendment delivered to the registered office.\n"
        )
    return root


def test_generated_eval_set_says_so_everywhere(compose, documents, tmp_path, caplog):
    from embedforge.pipeline import train

    run = tmp_path / "run"
    cfg = compose(
        "model=tiny", "trainer=debug", "logger=none", "data=folder", f"data.path={documents}",
        f"paths.output_dir={run}", f"paths.cache_dir={tmp_path / 'cache'}", "data.batch_size=4",
        "trainer.max_steps=1", "trainer.val_check_interval=5",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="embedforge"):
        train(cfg)
    m = json.loads((run / "metrics.json").read_text())
    assert m["eval_set"]["kind"] == "held-out synthetic"
    assert m["eval_note"] == GENERATED_EVAL_NOTE
    assert m["ship"]["gated_on"].startswith(f"ndcg@10 of {m['n_queries']} generated queries")
    report = (run / "report.md").read_text().splitlines()
    assert (
        report[2] == "**Measured on queries generated from your documents, not on real"
        " queries: give data.eval_path for a real number.**"
    )
    gate = next(line for line in report if line.startswith("Ship gate"))
    assert "generated queries" in gate and "not evidence on real ones" in gate
    final = [r.getMessage() for r in caplog.records if "report:" in r.getMessage()]
    assert final and GENERATED_EVAL_NOTE in final[-1]
    # max_steps 1 < val_check_interval 5: no validation ran during training
    assert m["val"]["best"] is None and "nan" not in " ".join(report[:12])
    assert any("no validation ran during training" in line for line in report)
    # one pass is not complete: the fraction and the whole passes agree
    assert m["training"]["epochs_completed"] == int(m["training"]["epochs"]) == 0
    # keep_checkpoints=none (the default): a finished run keeps model/, not checkpoints
    assert (run / "model" / "modules.json").is_file() and not list(run.rglob("*.ckpt"))


@pytest.mark.parametrize(
    "keep, left",
    [("none", []), ("best", ["best.ckpt"]), ("last", ["last.ckpt"]),
     ("all", ["best.ckpt", "last.ckpt"])],
)  # fmt: skip
def test_keep_checkpoints(tmp_path, keep, left):
    from embedforge.pipeline import prune_checkpoints

    for name in ("best.ckpt", "last.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    prune_checkpoints(tmp_path, keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_keep_checkpoints_is_validated(compose):
    from embedforge.config import validate
    from embedforge.errors import EmbedforgeError

    with pytest.raises(EmbedforgeError, match="keep_checkpoints must be one of none, best, last"):
        validate(compose("keep_checkpoints=some"))


def test_export_subset_reports_its_own_caps():
    from embedforge.eval.retrieval import RetrievalSet
    from embedforge.export.eval_set import subset

    corpus = {f"d{i}": f"doc {i}" for i in range(20)}
    queries = {f"q{i}": f"query {i}" for i in range(10)}
    rset = RetrievalSet(corpus, queries, {q: {f"d{i}": 1} for i, q in enumerate(queries)},
                        name="x", info={"max_queries": None, "max_docs": None})  # fmt: skip
    s = subset(rset, 4, 12).summary()
    assert (s["n_queries"], s["max_queries"], s["n_docs"], s["max_docs"]) == (4, 4, 12, 12)


def test_ingest_default_chunks_fit_the_default_model(tmp_path, capsys):
    from embedforge.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    clauses = (f"Clause {i} says the tenant gives notice within {i + 2} days." for i in range(300))
    (docs / "a.md").write_text("# Notice\n\n" + " ".join(clauses))
    assert main(["ingest", str(docs), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report["config"]["chunk_tokens"] == 254  # all-MiniLM-L6-v2 reads 256 with [CLS] [SEP]
    rows = [json.loads(line) for line in (tmp_path / "out" / "chunks.jsonl").open()]
    assert 200 < max(r["n_tokens"] for r in rows) <= 254 and len(rows) > 1


def test_training_reads_the_chunks_ingest_wrote(compose, tmp_path, documents):
    """README: `embedforge train data=folder data.path=<out>/chunks.jsonl`."""
    from hydra.utils import instantiate

    from embedforge.cli import main

    assert main(["ingest", str(documents), "--out", str(tmp_path / "out")]) == 0
    cfg = compose("data=folder", f"data.path={tmp_path / 'out' / 'chunks.jsonl'}",
                  f"data.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    chunks = instantiate(cfg.data).chunks()
    assert len(chunks) == len(TOPICS) * 2 and chunks[0]["title"].endswith(tuple("0123456789"))
