"""Compare runs: a table sorted by the monitored metric, with the config keys that differ.

    embedforge compare PATH... [--metric ndcg@10] [--plot out.png] [--plot-per-query out.png]
        [--json F|-] [--csv F|-]

PATH is a run dir, a multirun dir (every job below it) or a glob (quote it). Works offline from
the run dirs alone (.hydra/config.yaml, .hydra/overrides.yaml, metrics.json or failed.json).
The metric defaults to the config's ``monitor``. A run whose files cannot be read is listed as
``broken`` (an ``error:`` line names the file) and the exit code is 1; the others are shown as usual.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from embedforge.cli.common import compose_defaults, parse, parser, require
from embedforge.runs import (
    differing_keys,
    find_runs,
    load_summaries,
    markdown_table,
    short_names,
    sort_runs,
    table_rows,
    varying_overrides,
)


def _label(key: str, value: Any) -> str:
    if key.endswith("._target_"):  # a swapped group: loss=TripletLoss
        return f"{key[: -len('._target_')]}={str(value).rsplit('.', 1)[-1]}"
    return f"{key.rsplit('.', 1)[-1]}={value}"


def plot(
    rows: list[dict[str, Any]],
    keys: list[str],
    metric: str,
    path: str,
    typed: list[str] | None = None,
) -> Path:
    """Metric vs the varied parameter when exactly one numeric key varies, else a bar chart.

    ``typed``: each row's overrides as the user typed them (``model=tiny``), minus those shared by
    every run; the bars are named by them, else by the differing config keys.
    """
    from embedforge.plots import pyplot, save_figure

    plt = pyplot()
    ft, base = f"finetuned {metric}", f"baseline {metric}"
    ok = [r for r in rows if not math.isnan(r[ft])]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(ok) + 2), 4))
    numeric = len(keys) == 1 and all(isinstance(r.get(keys[0]), (int, float)) for r in ok)
    if numeric and ok:
        pts = sorted((r[keys[0]], r[ft], r[base]) for r in ok)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], "o-", label="fine-tuned")
        ax.plot(xs, [p[2] for p in pts], "x--", label="baseline")
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(keys[0])
        ax.legend()
    else:
        by_run = dict(zip((r["run"] for r in rows), typed or [""] * len(rows)))
        labels = [
            by_run[r["run"]] or ", ".join(_label(k, r.get(k)) for k in keys) or name
            for r, name in zip(ok, short_names([r["run"] for r in ok]))
        ]
        ax.bar(range(len(ok)), [r[ft] for r in ok], label="fine-tuned")
        ax.scatter(
            range(len(ok)),
            [r[base] for r in ok],
            color="k",
            marker="_",
            s=400,
            label="baseline",
            zorder=3,
        )
        ax.set_xticks(range(len(ok)), labels, rotation=30, ha="right", fontsize=8)
        ax.legend(loc="lower right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} (eval split) by run")
    return save_figure(fig, path)


def _emit(text: str, dest: str) -> None:
    if dest == "-":
        sys.stdout.write(text)
    else:
        Path(dest).write_text(text)


def main(argv: list[str] | None = None, prog: str = "embedforge compare") -> int:
    """Parse ``argv``, print the table (and write JSON/CSV/plot); returns the exit code."""
    ap = parser(prog, __doc__)
    ap.add_argument("paths", nargs="+", help="run dirs, multirun dirs or globs")
    ap.add_argument(
        "--metric",
        default=compose_defaults().monitor.removeprefix("val/"),
        help="eval metric shown as baseline / fine-tuned / delta",
    )
    ap.add_argument(
        "--keys", nargs="*", default=None, help="config keys to show (default: those that differ)"
    )
    ap.add_argument(
        "--ascending", action="store_true", help="sort lowest monitored value first (min monitors)"
    )
    ap.add_argument(
        "--plot", default=None, help="write a PNG: metric vs the varied key, or a bar chart"
    )
    ap.add_argument(
        "--plot-per-query", default=None, help="write a PNG: each run's per-query metric deltas"
    )
    ap.add_argument("--json", default=None, help="write rows as JSON to a file, or - for stdout")
    ap.add_argument("--csv", default=None, help="write rows as CSV to a file, or - for stdout")
    args = parse(ap, argv)
    if args.plot or args.plot_per_query:
        require("compare --plot", ["matplotlib"])
    runs = sort_runs(load_summaries(find_runs(args.paths)), descending=not args.ascending)
    broken = [r for r in runs if r.status == "broken"]
    for r in broken:
        print(f"error: {r.error}", file=sys.stderr)
    keys = differing_keys(runs) if args.keys is None else args.keys
    rows = table_rows(runs, args.metric, keys)
    if args.json:
        doc = {"metric": args.metric, "differing_keys": keys, "runs": rows}
        _emit(json.dumps(doc, indent=2, default=str) + "\n", args.json)
    if args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(
            {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
            for r in rows
        )
        _emit(buf.getvalue(), args.csv)
    if "-" not in (args.json, args.csv):
        print(markdown_table(rows), end="")
        print(f"\n{len(runs)} runs; differing keys: {', '.join(keys) or '(none)'}")
    typed = [" ".join(o) for o in varying_overrides(runs)]  # as the user typed them
    if args.plot:
        print(f"plot: {plot(rows, keys, args.metric, args.plot, typed)}", file=sys.stderr)
    if args.plot_per_query:
        from embedforge.per_query import plot_runs

        names = [t or n for t, n in zip(typed, short_names([str(r.path) for r in runs]))]
        out = plot_runs([r.path for r in runs], names, args.plot_per_query, args.metric)
        print(f"plot: {out}", file=sys.stderr)
    return 1 if broken else 0
