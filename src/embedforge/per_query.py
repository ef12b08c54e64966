"""Per-query evidence of a run: which queries the fine-tuning helped or hurt, and a picture of it.

``per_query.jsonl`` holds one row per scored query (qid, query text, baseline and fine-tuned
metrics); :class:`~embedforge.runs.QueryChanges` in ``metrics.json`` names the file and plot and
keeps the queries that gained and lost most, which ``report.md`` lists with their texts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from embedforge.eval.retrieval import EvalResult, RetrievalSet
from embedforge.eval.ship import SHIP_METRIC
from embedforge.io import read_jsonl, write_jsonl
from embedforge.plots import pyplot, save_figure
from embedforge.runs import QueryChanges

PER_QUERY_FILE = "per_query.jsonl"
PER_QUERY_PLOT = "per_query.png"


def per_query_rows(
    eval_set: RetrievalSet, baseline: EvalResult | None, finetuned: EvalResult
) -> list[dict[str, Any]]:
    """One row per scored query: ``qid``, ``query``, ``baseline`` (None without one), ``finetuned``."""
    base = baseline.per_query if baseline else {}
    return [
        {
            "qid": qid,
            "query": eval_set.queries.get(qid, ""),
            "baseline": base.get(qid),
            "finetuned": scores,
        }
        for qid, scores in finetuned.per_query.items()
    ]


def write_per_query(
    run_dir: Path,
    eval_set: RetrievalSet,
    baseline: EvalResult | None,
    finetuned: EvalResult,
    top: int = 5,
    metric: str = SHIP_METRIC,
) -> QueryChanges:
    """Write ``per_query.jsonl`` (and ``per_query.png`` with a baseline and matplotlib) into
    ``run_dir``."""
    rows = per_query_rows(eval_set, baseline, finetuned)
    write_jsonl(run_dir / PER_QUERY_FILE, rows)
    changes = QueryChanges(metric=metric, file=PER_QUERY_FILE)
    compared = [r for r in rows if r["baseline"] is not None]
    if not compared:
        return changes
    moved = sorted(
        (_moved(r, metric) for r in compared), key=lambda m: (m["delta"], m["qid"]), reverse=True
    )
    changes.n_better = sum(m["delta"] > 0 for m in moved)
    changes.n_worse = sum(m["delta"] < 0 for m in moved)
    changes.n_same = len(moved) - changes.n_better - changes.n_worse
    changes.gained = [m for m in moved[:top] if m["delta"] > 0]
    changes.lost = [m for m in reversed(moved[-top:]) if m["delta"] < 0]
    if importlib.util.find_spec("matplotlib") is not None:  # the picture needs the bench extra
        changes.plot = plot_run(compared, run_dir / PER_QUERY_PLOT).name
    return changes


def _moved(row: dict[str, Any], metric: str) -> dict[str, Any]:
    b, f = float(row["baseline"][metric]), float(row["finetuned"][metric])
    return {
        "qid": row["qid"],
        "query": row["query"],
        "baseline": round(b, 6),
        "finetuned": round(f, 6),
        "delta": round(f - b, 6),
    }


def plot_run(rows: list[dict[str, Any]], path: Path) -> Path:
    """Baseline vs fine-tuned mean per metric (left) and each metric's per-query deltas (right)."""
    plt = pyplot()
    metrics = list(rows[0]["finetuned"])
    base = [sum(r["baseline"][m] for r in rows) / len(rows) for m in metrics]
    tuned = [sum(r["finetuned"][m] for r in rows) / len(rows) for m in metrics]
    deltas = [[r["finetuned"][m] - r["baseline"][m] for r in rows] for m in metrics]
    fig, (ax_mean, ax_delta) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(metrics))
    ax_mean.bar([i - 0.2 for i in x], base, width=0.4, label="baseline")
    ax_mean.bar([i + 0.2 for i in x], tuned, width=0.4, label="fine-tuned")
    ax_mean.set_xticks(list(x), metrics, rotation=30, ha="right")
    ax_mean.set(title=f"mean over {len(rows)} queries", ylim=(0, 1))
    ax_mean.legend()
    ax_delta.boxplot(deltas)
    ax_delta.set_xticks([i + 1 for i in x], metrics, rotation=30, ha="right")
    ax_delta.axhline(0, color="grey", lw=0.8)
    ax_delta.set(title="per-query delta (fine-tuned - baseline)")
    return save_figure(fig, path)


def plot_runs(
    run_dirs: list[Path], names: list[str], path: Path, metric: str = SHIP_METRIC
) -> Path:
    """Several runs on one chart: the distribution of each run's per-query ``metric`` delta."""
    plt = pyplot()
    deltas = []
    for run in run_dirs:
        rows = (
            read_jsonl(Path(run) / PER_QUERY_FILE) if (Path(run) / PER_QUERY_FILE).is_file() else []
        )
        deltas.append(
            [r["finetuned"][metric] - r["baseline"][metric] for r in rows if r.get("baseline")]
        )
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(run_dirs) + 2), 4))
    ax.boxplot([d or [float("nan")] for d in deltas])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel=f"per-query {metric} delta", title=f"per-query {metric} change by run")
    return save_figure(fig, path)


def changes_markdown(c: QueryChanges) -> list[str]:
    """The report section: counts, the queries that gained and lost most, the plot."""
    lines = ["## Per-query changes", "", f"Every query's metrics: `{c.file}`."]
    if not c.n_better + c.n_worse + c.n_same:
        return lines + ["", "(no baseline: nothing to compare per query)", ""]
    lines += [
        "",
        f"{c.metric}: {c.n_better} queries better, {c.n_worse} worse, {c.n_same} unchanged.",
    ]
    for title, moved in (("Gained most", c.gained), ("Lost most", c.lost)):
        lines += ["", f"### {title}", "", "| qid | query | baseline | fine-tuned | delta |"]
        lines += ["|---|---|---:|---:|---:|"]
        lines += [
            f"| {m['qid']} | {_short(m['query'])} | {m['baseline']:.4f} | {m['finetuned']:.4f}"
            f" | {m['delta']:+.4f} |"
            for m in moved
        ] or ["| (none) | | | | |"]
    return lines + (["", f"![per-query metrics]({c.plot})", ""] if c.plot else [""])


def _short(text: str, n: int = 120) -> str:
    one = " ".join(text.split()).replace("|", "\\|")
    return one if len(one) <= n else one[: n - 1] + "…"
