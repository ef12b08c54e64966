"""Export a run's model (or a model dir) to ONNX fp32 + int8, check both, write export_report.json.

    embedforge export RUN_DIR_or_MODEL_DIR [--out DIR] [--force] [--beir DIR --split test]

A run whose fine-tuned NDCG@10 does not beat its baseline by ship.min_gain is refused (exit 2)
unless --force. A variant that breaks a bound is written but reported NOT good (exit 1).
Defaults: ``ship.min_gain`` from the config, the rest from ExportSettings, Bounds and Int8Recipe.
"""

from __future__ import annotations

from embedforge.cli.common import TRUST_HELP, compose_defaults, parse, parser, require


def main(argv: list[str] | None = None, prog: str = "embedforge export") -> int:
    """Parse ``argv``, export and check; returns 0 (all good), 1 (a variant not good) or 2."""
    from embedforge.export.checks import Bounds
    from embedforge.export.quantize import Int8Recipe
    from embedforge.export.runner import ExportSettings, export_model

    s, b = ExportSettings(), Bounds()
    ap = parser(prog, __doc__)
    ap.add_argument(
        "source", help="run dir (model/, metrics.json, .hydra/) or SentenceTransformer dir"
    )
    ap.add_argument("--out", default=None, help="default: RUN_DIR/onnx or MODEL_DIR-onnx")
    ap.add_argument("--force", action="store_true", help="export even if the ship gate fails")
    ap.add_argument(
        "--min-gain",
        type=float,
        default=compose_defaults().ship.min_gain,
        help="gate when the run config has none",
    )
    ap.add_argument("--beir", default=None, help="BEIR dir to evaluate on (default: the run's)")
    ap.add_argument("--split", default=s.split)
    ap.add_argument("--trust", action="store_true", help=TRUST_HELP)
    ap.add_argument("--max-queries", type=int, default=s.max_queries, help="0 = all")
    ap.add_argument("--max-docs", type=int, default=s.max_docs, help="0 = all")
    ap.add_argument("--max-ndcg-drop", type=float, default=b.max_ndcg_drop)
    ap.add_argument("--max-recall-drop", type=float, default=b.max_recall_drop)
    ap.add_argument("--min-mean-cosine", type=float, default=b.min_mean_cosine)
    ap.add_argument("--no-per-channel", action="store_true", help="one weight scale per tensor")
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights")
    ap.add_argument(
        "--int8-embeddings", action="store_true", help="quantize the embedding tables too (Gather)"
    )
    ap.add_argument("--exclude", nargs="*", default=None, help="regexes of node names kept fp32")
    ap.add_argument("--no-speed", action="store_true", help="skip latency/throughput")
    ap.add_argument(
        "--no-fuse", action="store_true", help="skip the fused variants (fp32_fused, int8_fused)"
    )
    args = parse(ap, argv)
    require("export", ["optimum.exporters.onnx", "onnxruntime", "onnx"])
    recipe = Int8Recipe(per_channel=not args.no_per_channel, reduce_range=args.reduce_range)
    if args.int8_embeddings:
        recipe.op_types = [*recipe.op_types, "Gather"]
    if args.exclude is not None:
        recipe.exclude = list(args.exclude)
    settings = ExportSettings(
        bounds=Bounds(args.max_ndcg_drop, args.max_recall_drop, args.min_mean_cosine),
        recipe=recipe,
        min_gain=args.min_gain,
        force=args.force,
        beir=args.beir,
        trust=args.trust,
        split=args.split,
        max_queries=args.max_queries or None,
        max_docs=args.max_docs or None,
        speed=not args.no_speed,
        fuse=not args.no_fuse,
    )
    report = export_model(args.source, args.out, settings)
    print(f"wrote {report['out']}/export_report.json (eval set: {report['eval_set']})")
    bad = 0
    for name, v in report["variants"].items():
        m, p = v["metrics"], v["parity"]
        status = "good" if v["good"] else "NOT GOOD: " + "; ".join(v["failed"])
        print(
            f"{name}: {v['size_mb']} MB, cosine mean {p['mean_cosine']:.4f} min {p['min_cosine']:.4f},"
            f" ndcg@10 {m['ndcg@10']:.4f} recall@5 {m['recall@5']:.4f} -> {status}"
        )
        bad += not v["good"]
    print(f"shipped int8: {report['shipped_int8']}")
    return 1 if bad else 0
