"""Mine hard negatives for a pairs file with the base model.

    python scripts/mine_negatives.py --pairs pairs.jsonl --corpus DIR_OR_chunks.jsonl --out mined.jsonl \
        [--model packaged:all-MiniLM-L6-v2] [--num-negatives 4] [--rank-window 10 100] [--margin 0.05]

``--corpus`` is a BEIR directory (passages = title + text; the judged-relevant documents of the
``--qrels-split`` split, default train, are excluded when the pair carries its ``query_id``; other
splits' labels are never read, so the reported split cannot shape the training negatives) or a chunks JSONL
(``{"id", "text", "title"?}``). ``--model tiny`` uses the random test encoder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedforge.errors import EmbedforgeError


def load_corpus(
    path: Path, qrels_split: str = "train"
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Passages and the judgements of ``qrels_split`` only (empty if the set has no such split)."""
    from embedforge.data.beir import doc_text, load_beir
    from embedforge.io import iter_jsonl

    if path.is_dir():
        ds = load_beir(path)
        qrels = {q: dict(rels) for q, rels in ds.qrels.get(qrels_split, {}).items()}
        return {d: doc_text(row) for d, row in ds.corpus.items()}, qrels
    corpus = {}
    for i, row in enumerate(iter_jsonl(path)):
        text, title = str(row.get("text", "")), str(row.get("title") or "").strip()
        corpus[str(row.get("id", i))] = f"{title} {text}".strip() if title else text
    return corpus, {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--corpus", required=True, help="BEIR directory or chunks.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    ap.add_argument("--num-negatives", type=int, default=4)
    ap.add_argument("--rank-window", type=int, nargs=2, default=(10, 100), metavar=("LO", "HI"))
    ap.add_argument("--margin", type=float, default=0.05, help="relative; negative value = off")
    ap.add_argument("--qrels-split", default="train", help="judgements excluded from negatives")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    try:
        from embedforge.data.hard_negatives import mine_hard_negatives
        from embedforge.data.sources import read_pairs
        from embedforge.io import iter_jsonl, require_file
        from embedforge.models.encoder import Encoder

        corpus_path = Path(args.corpus)
        if not corpus_path.exists():
            raise EmbedforgeError(f"--corpus not found: {corpus_path}")
        corpus, qrels = load_corpus(corpus_path, args.qrels_split)
        pairs = read_pairs(require_file(args.pairs, "--pairs"))
        for pair, row in zip(pairs, iter_jsonl(args.pairs)):  # keep every field (query_id, ...)
            pair.update({k: v for k, v in row.items() if k not in pair})
        encoder = Encoder.tiny() if args.model == "tiny" else Encoder.from_pretrained(args.model)
        stats: dict = {}
        mine_hard_negatives(
            pairs,
            corpus,
            encoder,
            args.num_negatives,
            tuple(args.rank_window),
            None if args.margin < 0 else args.margin,
            args.seed,
            qrels,
            args.batch_size,
            args.out,
            stats,
        )
        print(f"wrote {len(pairs)} pairs with hard negatives to {args.out} ({stats})")
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
