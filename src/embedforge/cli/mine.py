"""Mine hard negatives for a pairs file with a model.

    embedforge mine --pairs pairs.jsonl --corpus DIR_OR_chunks.jsonl --out mined.jsonl \\
        [--model packaged:all-MiniLM-L6-v2|tiny] [--num-negatives 4] [--rank-window 10 100]

``--corpus`` is a BEIR directory (passages = title + text; the judged-relevant documents of the
``--qrels-split`` split, default train, are excluded when the pair carries its ``query_id``; other
splits' labels are never read, so the reported split cannot shape the training negatives) or a
chunks JSONL (``{"id", "text", "title"?}``). Window, margin, seed, batch size and model default to the config
(``data.hard_negatives``, ``seed``, ``eval.batch_size``, ``model``).
"""

from __future__ import annotations

from pathlib import Path

from embedforge.cli.common import compose_defaults, parse, parser
from embedforge.errors import EmbedforgeError


def load_corpus(
    path: Path, qrels_split: str = "train"
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``(id -> passage, query id -> {doc id: relevance})`` of a BEIR dir or a chunks JSONL; the
    judgements are those of ``qrels_split`` only (empty if the set has no such split)."""
    from embedforge.data.beir import doc_text, load_beir
    from embedforge.io import iter_jsonl

    if path.is_dir():
        ds = load_beir(path)
        qrels = {q: dict(rels) for q, rels in ds.qrels.get(qrels_split, {}).items()}
        return {d: doc_text(row) for d, row in ds.corpus.items()}, qrels
    corpus = {}
    for i, row in enumerate(iter_jsonl(path)):
        corpus[str(row.get("id", i))] = doc_text(row)
    return corpus, {}


def main(argv: list[str] | None = None, prog: str = "embedforge mine") -> int:
    """Parse ``argv``, mine, write the pairs; returns the exit code."""
    from embedforge.data.hard_negatives import RANKERS

    cfg = compose_defaults("data=beir")
    hn = cfg.data.hard_negatives
    ap = parser(prog, __doc__)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--corpus", required=True, help="BEIR directory or chunks.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=cfg.model.name_or_path, help="'tiny': the test encoder")
    ap.add_argument(
        "--num-negatives", type=int, default=4, help="(the config's 0 means off in a run)"
    )
    ap.add_argument(
        "--rank-window", type=int, nargs=2, default=tuple(hn.rank_window), metavar=("LO", "HI")
    )
    ap.add_argument("--margin", type=float, default=hn.margin, help="relative; < 0 = off")
    ap.add_argument("--qrels-split", default="train", help="judgements excluded from negatives")
    ap.add_argument("--seed", type=int, default=cfg.seed)
    ap.add_argument("--batch-size", type=int, default=cfg.eval.batch_size)
    ap.add_argument(
        "--method", choices=sorted(RANKERS), default=hn.method, help="bm25: no model is loaded"
    )
    args = parse(ap, argv)
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
    encoder = None
    if args.method == "dense":
        encoder = Encoder.tiny() if args.model == "tiny" else Encoder.from_pretrained(args.model)
    stats: dict = {}
    mine_hard_negatives(
        pairs, corpus, encoder, args.num_negatives, tuple(args.rank_window),
        None if args.margin < 0 else args.margin, args.seed, qrels, args.batch_size, args.out,
        stats, args.method,
    )  # fmt: skip
    print(f"wrote {len(pairs)} pairs with hard negatives to {args.out} ({stats})")
    return 0
