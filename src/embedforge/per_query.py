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


def _counts(deltas: list[float], eps: float = 1e-9) -> tuple[int, int, int]:
    """(better, same, worse): how many queries rose, stayed, fell."""
    better = sum(d > eps for d in deltas)
    worse = sum(d < -eps for d in deltas)
    return better, len(deltas) - better - worse, worse


def plot_run(rows: list[dict[str, Any]], path: Path) -> Path:
    """Baseline vs fine-tuned mean per metric (left) and, per metric, how many queries got better,
    stayed the same or got worse (right): most queries often do not move, which a box plot of
    the deltas hides (its box collapses onto a line)."""
    plt = pyplot()
    metrics = list(rows[0]["finetuned"])
    base = [sum(r["baseline"][m] for r in rows) / len(rows) for m in metrics]
    tuned = [sum(r["finetuned"][m] for r in rows) / len(rows) for m in metrics]
    counts = [_counts([r["finetuned"][m] - r["baseline"][m] for r in rows]) for m in metrics]
    fig, (ax_mean, ax_count) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(metrics))
    ax_mean.bar([i - 0.2 for i in x], base, width=0.4, label="baseline")
    ax_mean.bar([i + 0.2 for i in x], tuned, width=0.4, label="fine-tuned")
    ax_mean.set_xticks(list(x), metrics, rotation=30, ha="right")
    ax_mean.set(title=f"mean over {len(rows)} queries", ylim=(0, 1))
    ax_mean.legend()
    left = [0] * len(metrics)
    for k, (label, color) in enumerate(
        [("better", "tab:green"), ("same", "lightgrey"), ("worse", "tab:red")]
    ):
        n = [c[k] for c in counts]
        bars = ax_count.barh(list(x), n, left=left, color=color, label=label)
        ax_count.bar_label(bars, labels=[str(v) if v else "" for v in n], label_type="center")
        left = [a + b for a, b in zip(left, n)]
    ax_count.set_yticks(list(x), metrics)
    ax_count.invert_yaxis()
    ax_count.set(title="queries per metric: fine-tuned vs baseline", xlabel="queries")
    ax_count.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_runs(
    run_dirs: list[Path], names: list[str], path: Path, metric: str = SHIP_METRIC
) -> Path:
    """Several runs on one chart: each run's per-query ``metric`` deltas sorted, worst to best
    (where the curve crosses 0 and how far it climbs; the legend counts better/same/worse)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run, name in zip(run_dirs, names):
        file = Path(run) / PER_QUERY_FILE
        rows = read_jsonl(file) if file.is_file() else []
        deltas = sorted(
            r["finetuned"][metric] - r["baseline"][metric] for r in rows if r.get("baseline")
        )
        if not deltas:
            continue
        better, same, worse = _counts(deltas)
        xs = [i / max(1, len(deltas) - 1) for i in range(len(deltas))]
        ax.plot(xs, deltas, label=f"{name}: +{better} ={same} -{worse}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(
        xlabel="queries, sorted by change (fraction)",
        ylabel=f"per-query {metric} delta",
        title=f"per-query {metric} change by run (+better =same -worse)",
    )
    ax.legend(fontsize=7, loc="upper left")
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
