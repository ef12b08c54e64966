"""Per-query evidence: the rows, the queries that moved most, the report section, the plots."""

from __future__ import annotations

import json

import pytest

from embedforge.eval.retrieval import EvalResult, RetrievalSet
from embedforge.io import read_jsonl
from embedforge.per_query import PER_QUERY_FILE, plot_runs, write_per_query
from embedforge.report import write_report
from embedforge.runs import QueryChanges, RunMetrics


def _result(per_query: dict[str, dict[str, float]]) -> EvalResult:
    metrics = {k: sum(q[k] for q in per_query.values()) / len(per_query) for k in ("ndcg@10",)}
    return EvalResult(metrics, per_query, len(per_query), 0, 10, {})


@pytest.fixture()
def evidence(tmp_path):
    queries = {f"q{i}": f"text of query {i}" for i in range(8)}
    eval_set = RetrievalSet({}, queries, {q: {"d": 1} for q in queries})
    base = _result({q: {"ndcg@10": 0.5, "recall@5": 0.5} for q in queries})
    moves = [0.4, -0.3, 0.1, 0.0, -0.5, 0.2, 0.0, -0.1]  # q0 gained most, q4 lost most
    tuned = _result({q: {"ndcg@10": 0.5 + d, "recall@5": 0.5} for q, d in zip(queries, moves)})
    return write_per_query(tmp_path, eval_set, base, tuned, top=2), tmp_path


def test_gained_and_lost_most_with_their_texts(evidence):
    changes, run = evidence
    assert (changes.n_better, changes.n_worse, changes.n_same) == (3, 3, 2)
    assert [(m["qid"], m["delta"]) for m in changes.gained] == [("q0", 0.4), ("q5", 0.2)]
    assert [(m["qid"], m["delta"]) for m in changes.lost] == [("q4", -0.5), ("q1", -0.3)]
    assert changes.lost[0]["query"] == "text of query 4"
    rows = read_jsonl(run / PER_QUERY_FILE)
    assert rows[4] == {
        "qid": "q4",
        "query": "text of query 4",
        "baseline": {"ndcg@10": 0.5, "recall@5": 0.5},
        "finetuned": {"ndcg@10": 0.0, "recall@5": 0.5},
    }
    assert (run / changes.plot).read_bytes()[:4] == b"\x89PNG"


def test_report_section_and_metrics_json_round_trip(evidence):
    changes, run = evidence
    m = RunMetrics(
        task="t",
        baseline={"ndcg@10": 0.5},
        finetuned={"ndcg@10": 0.5},
        val={"base": 0.1, "best": None, "last": 0.1},
        ship={"min_gain": 0.01, "passed": False},
        eval_set={"name": "e"},
        val_set={"name": "v", "n_queries": 1, "n_docs": 1},
        per_query=changes,
    )
    m.write(run / "metrics.json")
    assert RunMetrics.load(run / "metrics.json").per_query == changes
    report = write_report(run, m).read_text()
    section = report[report.index("## Per-query changes") :]
    assert "3 queries better, 3 worse, 2 unchanged" in section
    assert "| q0 | text of query 0 | 0.5000 | 0.9000 | +0.4000 |" in section
    assert section.index("text of query 4") < section.index("text of query 1")  # worst first
    assert f"![per-query metrics]({changes.plot})" in section


def test_no_baseline_writes_rows_without_a_comparison(tmp_path):
    eval_set = RetrievalSet({}, {"q": "a query"}, {"q": {"d": 1}})
    changes = write_per_query(tmp_path, eval_set, None, _result({"q": {"ndcg@10": 1.0}}))
    assert changes == QueryChanges(metric="ndcg@10", file=PER_QUERY_FILE)
    assert read_jsonl(tmp_path / PER_QUERY_FILE)[0]["baseline"] is None


def test_several_runs_on_one_chart(evidence, tmp_path):
    _, run = evidence
    out = plot_runs([run, run], ["a", "b"], tmp_path / "runs.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / PER_QUERY_FILE).read_text().splitlines()[0])["qid"] == "q0"


def test_compare_runs_plots_per_query_deltas_of_several_runs(tmp_path, capsys):
    from embedforge.cli import compare
    from tests.test_runs import make_run

    queries = {f"q{i}": f"query {i}" for i in range(4)}
    eval_set = RetrievalSet({}, queries, {q: {"d": 1} for q in queries})
    base = _result({q: {"ndcg@10": 0.5} for q in queries})
    for i, lr in enumerate((1e-5, 1e-4)):
        run = make_run(tmp_path / "sweep" / str(i), lr, "MultipleNegativesRankingLoss", 0.6)
        tuned = _result({q: {"ndcg@10": 0.5 + 0.1 * i * j} for j, q in enumerate(queries)})
        write_per_query(run, eval_set, base, tuned)
    out = tmp_path / "per_query_runs.png"
    assert compare.main([str(tmp_path / "sweep"), "--plot-per-query", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and str(out) in capsys.readouterr().err


def test_without_matplotlib_the_evidence_is_written_without_the_picture(tmp_path, monkeypatch):
    """matplotlib is the bench extra: a core install still writes rows and the summary."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec -> None, import fails
    queries = {"q0": "a", "q1": "b"}
    eval_set = RetrievalSet({}, queries, {q: {"d": 1} for q in queries})
    base = _result({q: {"ndcg@10": 0.5} for q in queries})
    tuned = _result({"q0": {"ndcg@10": 0.9}, "q1": {"ndcg@10": 0.5}})
    changes = write_per_query(tmp_path, eval_set, base, tuned)
    assert changes.plot is None and changes.n_better == 1
    assert not list(tmp_path.glob("*.png")) and (tmp_path / PER_QUERY_FILE).is_file()
    from embedforge.per_query import changes_markdown

    section = "\n".join(changes_markdown(changes))
    assert "1 queries better" in section and "no baseline" not in section and "![" not in section


def _captured(monkeypatch) -> list:
    """Figures handed to ``save_figure`` (written as usual), to read what they show."""
    import embedforge.plots as plots

    figures, save = [], plots.save_figure

    def keep(fig, path):
        figures.append([(ax.get_title(), [t.get_text() for t in ax.get_xticklabels()],
                         [t.get_text() for t in ax.get_yticklabels()],
                         ax.get_legend_handles_labels()[1]) for ax in fig.axes])  # fmt: skip
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    monkeypatch.setattr("embedforge.per_query.save_figure", keep)
    return figures


def test_run_plot_counts_better_same_worse_instead_of_box_plots(tmp_path, monkeypatch):
    figures = _captured(monkeypatch)
    queries = {f"q{i}": f"query {i}" for i in range(8)}
    eval_set = RetrievalSet({}, queries, {q: {"d": 1} for q in queries})
    base = _result({q: {"ndcg@10": 0.5, "recall@5": 0.5} for q in queries})
    moves = [0.4, -0.3, 0.1, 0.0, -0.5, 0.2, 0.0, -0.1]
    tuned = _result({q: {"ndcg@10": 0.5 + d, "recall@5": 0.5} for q, d in zip(queries, moves)})
    write_per_query(tmp_path, eval_set, base, tuned)
    (_, (title, _, metrics, legend)) = figures[-1]
    assert "queries per metric" in title and legend == ["better", "same", "worse"]
    assert metrics == ["ndcg@10", "recall@5"]


def test_runs_plot_sorted_deltas_with_counts(evidence, tmp_path, monkeypatch):
    figures = _captured(monkeypatch)
    _, run = evidence
    plot_runs([run], ["loss=triplet"], tmp_path / "runs.png")
    ((_, _, _, legend),) = figures[-1]
    assert legend == ["loss=triplet: +3 =2 -3"]
