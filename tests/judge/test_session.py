"""Judging through the HTTP API: blind pooling, atomic files, undo, resume, scoring, the gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedforge.errors import EmbedforgeError
from embedforge.eval.retrieval import search
from embedforge.io import read_jsonl
from embedforge.runs import RunMetrics, load_run, ship_gate


@pytest.fixture()
def client(tiny_run):
    from fastapi.testclient import TestClient

    from embedforge.judge.app import create_app
    from embedforge.judge.session import JudgeSession

    session = JudgeSession(tiny_run, k=3)
    return session, TestClient(create_app(session))


def _qrels(path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        q, d, g = line.split("\t")
        out.setdefault(q, {})[d] = int(g)
    return out


def test_pool_is_the_shuffled_union_of_both_top_k_and_never_names_a_system(client, tiny_run):
    session, http = client
    page = http.get("/").text
    assert "<script>" in page and "<style>" in page  # inline: works offline
    assert "http" not in page and "src=" not in page and "@import" not in page  # no external asset
    view = http.post("/api/queries", json={"text": "what about the refund"}).json()
    (q,) = view["queries"]
    union = set()
    for name in ("base", "finetuned"):
        emb = session.encoders[name].encode(["what about the refund"], "query", 1, False)
        idx, _ = search(emb, session.doc_emb[name], 3)
        union |= {session.doc_ids[j] for j in idx[0]}
    pool = [d["did"] for d in q["docs"]]
    assert set(pool) == union and len(pool) == len(union)
    # shuffled per query by (seed, qid, text): not in id order, the same on every reopening
    for text in ("what about the lease", "what about the invoice", "what about the license"):
        view = http.post("/api/queries", json={"text": text}).json()
    pools = [[d["did"] for d in q["docs"]] for q in view["queries"]]
    assert any(p != sorted(p) for p in pools)
    assert [[d["did"] for d in q["docs"]] for q in session.view()["queries"]] == pools
    text = json.dumps(view) + (tiny_run / "judged" / "state.json").read_text()
    assert "finetuned" not in text and '"base"' not in text  # blind: no system names


def test_grades_are_saved_at_once_undo_and_reopen_resume(client, tiny_run):
    from embedforge.judge.session import JudgeSession

    session, http = client
    q = http.post("/api/queries", json={"text": "what about the lease"}).json()["queries"][0]
    a, b = q["docs"][0]["did"], q["docs"][1]["did"]
    http.post("/api/judge", json={"qid": q["qid"], "did": a, "grade": 2})
    qrels = tiny_run / "judged" / "qrels" / "test.tsv"
    assert _qrels(qrels) == {q["qid"]: {a: 2}}  # on disk after one judgement
    http.post("/api/judge", json={"qid": q["qid"], "did": b, "grade": 1})
    http.post("/api/judge", json={"qid": q["qid"], "did": a, "grade": 0})
    assert _qrels(qrels) == {q["qid"]: {a: 0, b: 1}}
    undone = http.post("/api/undo").json()
    assert undone["undone"] == [q["qid"], a] and _qrels(qrels) == {q["qid"]: {a: 2, b: 1}}
    bad = http.post("/api/judge", json={"qid": q["qid"], "did": "nope", "grade": 2})
    assert bad.status_code == 400 and "not in the pool" in bad.json()["error"]
    assert http.post("/api/judge", json={"qid": q["qid"], "did": a, "grade": 5}).status_code == 400
    assert read_jsonl(tiny_run / "judged" / "queries.jsonl")[0]["text"] == "what about the lease"
    assert not list((tiny_run / "judged").rglob("*.tmp"))
    reopened = JudgeSession(tiny_run, k=3).view()
    assert reopened["queries"] == http.get("/api/state").json()["queries"]
    assert reopened["n_judgements"] == 2


def test_question_written_for_a_sampled_passage_pools_it_as_relevant(client):
    session, http = client
    p = http.get("/api/passage").json()
    assert p == session.passage() and p["text"]
    q = http.post("/api/queries", json={"text": "which clause?", "passage": p["did"]}).json()
    docs = {d["did"]: d["grade"] for d in q["queries"][0]["docs"]}
    assert docs[p["did"]] == 2
    assert http.get("/api/passage").json()["did"] != p["did"]  # the next sample


def test_score_gives_both_models_with_intervals_into_metrics_report_and_gate(client, tiny_run):
    session, http = client
    texts = ["what about the lease", "what about the invoice", "what about the privacy"]
    for text in texts:
        view = http.post("/api/queries", json={"text": text}).json()
    for q in view["queries"]:
        topic = q["text"].rsplit(" ", 1)[-1]
        for d in q["docs"]:
            g = 2 if topic in d["text"] else 0
            http.post("/api/judge", json={"qid": q["qid"], "did": d["did"], "grade": g})
    s = http.post("/api/score").json()
    assert s["n_queries"] == 3 and s["n_judgements"] == sum(len(q["docs"]) for q in view["queries"])
    for m in ("ndcg@10", "recall@5", "mrr@10", "recall@100"):
        sig = s["significance"][m]
        assert sig["low"] <= s["delta"][m] <= sig["high"] and sig["n"] == 3
        assert s["delta"][m] == pytest.approx(s["finetuned"][m] - s["baseline"][m], abs=2e-6)
    m = RunMetrics.load(tiny_run / "metrics.json")
    assert m.judged == s and m.ship_evidence()["on"] == "judged"
    report = (tiny_run / "report.md").read_text()
    assert "## Judged queries" in report and f"{s['n_judgements']} judgements" in report
    # embedforge evaluate on the judged run reads judged/ and agrees with the session's score
    from embedforge.cli import evaluate as evaluate_cli

    out = tiny_run / "eval.json"
    assert evaluate_cli.main([str(tiny_run / "model"), "--data", str(tiny_run), "--out", str(out),
                              "--max-seq-length", "64"]) == 0  # fmt: skip
    ev = json.loads(out.read_text())
    assert ev["n_queries"] == 3 and ev["metrics"]["ndcg@10"] == pytest.approx(
        s["finetuned"]["ndcg@10"], abs=1e-5
    )
    # the ship gate of the run now judges on the judged queries
    cfg, metrics = load_run(tiny_run)
    gain = s["delta"]["ndcg@10"]
    if gain < 0.01:
        with pytest.raises(EmbedforgeError, match="judged"):
            ship_gate(cfg, metrics, 0.01)
    else:
        assert ship_gate(cfg, metrics, 0.01)["on"] == "judged"


def test_an_unfinished_run_is_one_clear_error(tiny_run):
    import shutil

    from embedforge.judge.session import JudgeSession

    shutil.rmtree(tiny_run / "model")
    with pytest.raises(EmbedforgeError, match="no model/"):
        JudgeSession(tiny_run)


def test_corpus_embeddings_are_cached_once_per_model(tiny_run):
    from embedforge.judge.session import JudgeSession

    first = JudgeSession(tiny_run, k=3)
    cached = sorted((tiny_run / "judged" / "cache").glob("*.npy"))
    assert [p.name.split("-")[0] for p in cached] == ["base", "finetuned"]
    second = JudgeSession(tiny_run, k=3)
    np.testing.assert_array_equal(first.doc_emb["finetuned"], second.doc_emb["finetuned"])
    assert sorted((tiny_run / "judged" / "cache").glob("*.npy")) == cached


def test_cli_preloads_queries_scores_and_says_one_line_errors(tiny_run, tmp_path, capsys):
    from embedforge import cli

    queries = tmp_path / "q.txt"
    queries.write_text("what about the lease\n\nwhat about the refund\n")
    assert cli.main(["judge", str(tiny_run), "--queries", str(queries), "--score", "--k", "2"]) == 2
    err = capsys.readouterr().err  # loaded, nothing judged yet: nothing recorded either
    assert err.startswith("error: nothing to score yet") and err.count("\n") == 1
    assert RunMetrics.load(tiny_run / "metrics.json").judged is None
    rows = read_jsonl(tiny_run / "judged" / "queries.jsonl")
    assert [r["text"] for r in rows] == ["what about the lease", "what about the refund"]
    assert cli.main(["judge", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a run directory" in err and err.count("\n") == 1
