"""Evaluate a model on a BEIR dataset: ``embedforge evaluate MODEL --data DIR [--split test]``.

MODEL is a SentenceTransformer directory (e.g. ``outputs/<task>/<time>/model``), a hub id, or
``packaged:all-MiniLM-L6-v2``. ``--data`` is a BEIR directory, or a run directory judged with
``embedforge judge`` (its ``judged/`` set). Prints the metrics as JSON (and writes them with ``--out``).
Split, eval corpus, caps, metrics, batch size and max length default to the config.
"""

from __future__ import annotations

import json
from pathlib import Path

from embedforge.cli.common import compose_defaults, parse, parser


def main(argv: list[str] | None = None, prog: str = "embedforge evaluate") -> int:
    """Parse ``argv``, evaluate, print the metrics JSON; returns the exit code."""
    cfg = compose_defaults("data=beir")
    ap = parser(prog, __doc__)
    ap.add_argument("model")
    ap.add_argument(
        "--data", required=True, help="BEIR dataset directory, or a judged run dir (RUN/judged)"
    )
    ap.add_argument("--split", default=cfg.data.eval_split)
    ap.add_argument("--eval-corpus", default=cfg.data.eval_corpus, choices=["all", "same_group"])
    ap.add_argument("--max-queries", type=int, default=cfg.data.eval_max_queries)
    ap.add_argument("--max-docs", type=int, default=cfg.data.eval_max_docs)
    ap.add_argument("--query-prefix", default=None, help="default: the model's saved query prompt")
    ap.add_argument("--doc-prefix", default=None)
    ap.add_argument("--max-seq-length", type=int, default=cfg.model.max_seq_length)
    ap.add_argument("--metrics", default=",".join(cfg.eval.metrics))
    ap.add_argument("--batch-size", type=int, default=cfg.eval.batch_size)
    ap.add_argument("--out", default=None, help="write the metrics JSON here")
    ap.add_argument(
        "--no-store",
        action="store_true",
        help="encode everything afresh (default: through the embedding store, docs/scale.md)",
    )
    args = parse(ap, argv)
    from embedforge.config import build
    from embedforge.data.sources import BeirSource
    from embedforge.eval.retrieval import evaluate
    from embedforge.io import write_json
    from embedforge.models.encoder import Encoder

    enc = Encoder.from_pretrained(
        args.model,
        query_prefix=args.query_prefix,
        doc_prefix=args.doc_prefix,
        max_seq_length=args.max_seq_length,
    )
    if cfg.get("embedding_store") and not args.no_store:  # the texts a run encoded are not again
        enc.store = build(cfg.embedding_store)
    data = Path(args.data)
    if (data / "judged" / "qrels").is_dir():  # a judged run: its person-judged queries
        data = data / "judged"
    src = BeirSource(
        str(data),
        eval_split=args.split,
        val_split=None,
        eval_corpus=args.eval_corpus,
        eval_max_queries=args.max_queries,
        eval_max_docs=args.max_docs,
    )
    rset = src.eval_set()
    res = evaluate(enc, rset, args.metrics.split(","), args.batch_size)
    out = {
        "model": args.model,
        "eval_set": rset.summary(),
        "metrics": res.metrics,
        "n_queries": res.n_queries,
        "n_skipped": res.n_skipped,
        "n_docs": res.n_docs,
        "seconds": res.seconds,
    }
    if enc.store is not None:
        out["encodes"] = enc.store.summary()
    print(json.dumps(out, indent=2, default=str))
    if args.out:
        write_json(args.out, out)
    return 0
