"""Evaluate a model on a BEIR dataset: ``python scripts/evaluate.py MODEL --data DIR [--split test]``.

MODEL is a SentenceTransformer directory (e.g. ``outputs/<task>/<time>/model``), a hub id, or
``packaged:all-MiniLM-L6-v2``. Prints the metrics as JSON (and writes them with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys

from embedforge.errors import EmbedforgeError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="BEIR dataset directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("--eval-corpus", default="all", choices=["all", "same_group"])
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--query-prefix", default=None, help="default: the model's saved query prompt")
    ap.add_argument("--doc-prefix", default=None)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--metrics", default="ndcg@10,recall@5,mrr@10,recall@100")
    ap.add_argument("--out", default=None, help="write the metrics JSON here")
    args = ap.parse_args(argv)
    try:
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
        src = BeirSource(
            args.data,
            eval_split=args.split,
            val_split=None,
            eval_corpus=args.eval_corpus,
            eval_max_queries=args.max_queries,
            eval_max_docs=args.max_docs,
        )
        rset = src.eval_set()
        res = evaluate(enc, rset, args.metrics.split(","), show_progress=True)
        out = {
            "model": args.model,
            "eval_set": rset.summary(),
            "metrics": res.metrics,
            "n_queries": res.n_queries,
            "n_skipped": res.n_skipped,
            "n_docs": res.n_docs,
            "seconds": res.seconds,
        }
        print(json.dumps(out, indent=2, default=str))
        if args.out:
            write_json(args.out, out)
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
