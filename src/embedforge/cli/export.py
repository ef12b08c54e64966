"""Export a run's model (or a model dir) to ONNX fp32 + int8, check both, write export_report.json.

    embedforge export RUN_DIR_or_MODEL_DIR [--out DIR] [--force] [--beir DIR --split test]

A run whose fine-tuned NDCG@10 does not beat its baseline by ship.min_gain is refused (exit 2)
unless --force. A variant that breaks a bound is written but reported NOT good; a metric drop over
its bound breaks it only when its 95% paired bootstrap interval excludes 0 (docs/ship.md). Exit 1
when an fp32 variant or the shipped int8 one (the fastest good one: int8_fused, int8, else the
slower int8_blockwise fallback) is not good.
Defaults: ``ship.min_gain`` from the config, the rest from ExportSettings, Bounds and Int8Recipe.
"""

from __future__ import annotations

from embedforge.cli.common import TRUST_HELP, compose_defaults, parse, parser, require


def main(argv: list[str] | None = None, prog: str = "embedforge export") -> int:
    """Parse ``argv``, export and check; returns 0 (fp32 and shipped int8 good), 1 or 2."""
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
    ap.add_argument(
        "--no-fallback",
        action="store_true",
        help="no int8_blockwise fallback when the fast int8 variants miss the bounds",
    )
    ap.add_argument("--no-speed", action="store_true", help="skip latency/throughput")
    ap.add_argument(
        "--no-store",
        action="store_true",
        help="encode the PyTorch reference afresh (default: through the embedding store)",
    )
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
        store=not args.no_store,
        default_store=compose_defaults().get("embedding_store"),
    )
    if args.no_fallback:
        settings.fallback = None
    report = export_model(args.source, args.out, settings)
    print(f"wrote {report['out']}/export_report.json (eval set: {report['eval_set']})")
    bad = 0
    for name, v in report["variants"].items():
        m, p = v["metrics"], v["parity"]
        status = "good" if v["good"] else "NOT GOOD: " + "; ".join(v["failed"])
        drops = ", ".join(
            f"{k} drop {ci['drop']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"
            for k, ci in v["drop_ci"].items()
        )
        print(
            f"{name}: {v['size_mb']} MB, cosine mean {p['mean_cosine']:.4f} min {p['min_cosine']:.4f},"
            f" ndcg@10 {m['ndcg@10']:.4f} recall@5 {m['recall@5']:.4f} ({drops}) -> {status}"
        )
        bad += not v["good"] and (name.startswith("fp32") or name == report["shipped_int8"])
    print(f"shipped int8: {report['shipped_int8']}")
    return 1 if bad else 0
