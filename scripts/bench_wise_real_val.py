"""Does choosing the WiSE alpha on real validation pay? The curve of finished real-query runs.

    nice -n 10 python scripts/bench_wise_real_val.py RUN_DIR [RUN_DIR ...] [--alphas 0.25 0.5 0.75]
        [--out outputs/bench/wise_real_val.json]

For each run (a finished ``embedforge train`` whose validation holds real queries, e.g. the runs
of ``scripts/bench_vs_st.py`` under ``outputs/bench/vs_st/<set>/embedforge_run``): the shipped
weights (``model/``) interpolated with the base model, ``alpha * fine-tuned + (1 - alpha) *
base`` (``embedforge.train.wise.interpolate``, what ``eval.wise_alphas`` ships), scored on the
run's validation set and its test set, rebuilt from its saved config. alpha 0 and 1 come from the
run's own ``metrics.json`` / ``per_query.jsonl``. Per run: the validation curve, the alpha
validation would pick (``eval.wise_alphas`` picks the argmax, ties nearest the base), each alpha's
test NDCG@10 / Recall@5 with its paired difference to the shipped weights (bootstrap 95%
interval over the test queries), and the seconds one more alpha costs (validation and test
encodes; the validation alone is what a run pays). The JSON is rewritten after every alpha; an
alpha already in it is not scored again. docs/real-queries.md quotes the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import add_load_arguments, loadavg, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["ndcg@10", "recall@5"]


def curve(run: Path, alphas: list[float], done: dict[str, Any], save) -> dict[str, Any]:
    """Score each missing alpha of ``run`` (``done``: what an earlier invocation measured)."""
    from embedforge.config import build
    from embedforge.eval.retrieval import evaluate
    from embedforge.models.encoder import Encoder, resolve_model_path
    from embedforge.runs import load_config
    from embedforge.train.wise import interpolate

    cfg = load_config(run)
    data = build(cfg.data)
    sets = {"val": data.val_set(), "test": data.eval_set()}
    qp, dp = cfg.model.get("query_prefix") or "", cfg.model.get("doc_prefix") or ""
    length = int(cfg.model.max_seq_length)
    enc = Encoder.from_pretrained(
        str(resolve_model_path(cfg.model.name_or_path)), qp, dp, max_seq_length=length
    )
    base = {k: v.clone() for k, v in enc.state_dict().items()}
    shipped = Encoder.from_pretrained(str(run / "model"), qp, dp, max_seq_length=length)
    finetuned = shipped.state_dict()
    for a in alphas:
        if str(a) in done:
            continue
        enc.load_state_dict(interpolate(base, finetuned, a))
        enc.eval()
        row: dict[str, Any] = {"load": loadavg()}
        for name, rset in sets.items():
            t = time.perf_counter()
            r = evaluate(enc, rset, METRICS, int(cfg.eval.batch_size), show_progress=False)
            row[name] = r.metrics
            row[f"{name}_per_query"] = r.per_query
            row[f"{name}_s"] = round(time.perf_counter() - t, 1)
        done[str(a)] = row
        save()
        print(f"{run.name} alpha {a}: val {row['val']} test {row['test']}", flush=True)
    return done


def summarize(run: Path, points: dict[str, Any]) -> dict[str, Any]:
    """The validation pick and each alpha's test change against the shipped weights."""
    from embedforge.eval.significance import paired_delta

    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "per_query.jsonl").open()]
    shipped = {r["qid"]: r["finetuned"] for r in rows}
    # each alpha's per-query test scores; alpha 0 is the base model, scored by the run itself
    scored = {str(a): p["test_per_query"] for a, p in points.items()}
    if rows and all("baseline" in r for r in rows):
        scored["0.0"] = {r["qid"]: r["baseline"] for r in rows}
    val = {0.0: metrics["val"]["base"], 1.0: metrics["monitor_value"]}
    val |= {float(a): p["val"]["ndcg@10"] for a, p in points.items()}
    pick = max(val, key=lambda a: (val[a], -a))  # eval.wise_alphas: ties nearest the base
    # (alpha 1 is the shipped weights themselves: no delta entry, 0)
    test = {0.0: metrics["baseline"], 1.0: metrics["finetuned"]}
    test |= {float(a): p["test"] for a, p in points.items()}
    delta = {}
    for a, per_query in scored.items():
        qids = sorted(set(per_query) & set(shipped))
        delta[a] = {
            m: paired_delta([shipped[q][m] for q in qids], [per_query[q][m] for q in qids])
            for m in METRICS
        }
    return {
        "selected": metrics.get("selected"),
        "val_ndcg@10": {str(a): round(v, 4) for a, v in sorted(val.items())},
        "val_picks": pick,
        "test": {str(a): {m: round(t[m], 4) for m in METRICS} for a, t in sorted(test.items())},
        "test_minus_shipped": delta,
        "picked_minus_shipped": delta.get(str(pick), {}).get("ndcg@10", {"delta": 0.0}),
        "val_s_per_alpha": round(sum(p["val_s"] for p in points.values()) / max(1, len(points)), 1),
        "n_val_queries": len(next(iter(points.values()))["val_per_query"]) if points else None,
        "n_test_queries": len(shipped),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--alphas", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "wise_real_val.json")
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}}
    record["machine"] = machine(args.max_load, args.force)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")

    for run in args.runs:
        entry = record["runs"].setdefault(str(run), {"points": {}})
        curve(run, args.alphas, entry["points"], save)
        entry["summary"] = summarize(run, entry["points"])
        save()
        s = entry["summary"]
        print(
            f"{run}: val picks alpha {s['val_picks']} (curve {s['val_ndcg@10']}); test minus"
            f" shipped {s['picked_minus_shipped']}; {s['val_s_per_alpha']} s of validation per alpha"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
