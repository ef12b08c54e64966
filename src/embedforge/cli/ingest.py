"""Ingest a folder or file of documents into ``chunks.jsonl`` + ``ingest_report.json``.

    embedforge ingest PATH --out DIR [--chunk-tokens N] [--overlap N] [--min-tokens N]
        [--model packaged:all-MiniLM-L6-v2|tiny|<dir or hub id>] [--near-dup 0.9]
        [--max-file-mb 100] [--force]

Defaults come from conf/data/folder.yaml, with chunks capped to what the model reads, as
``train data=folder`` caps them (254 tokens for the default all-MiniLM-L6-v2). Prints a summary; a
rerun with the same files, settings and tokenizer reuses the output. Train on the chunks:
``embedforge train data=folder data.path=DIR/chunks.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from embedforge.cli.common import compose_defaults, parse, parser, require
from embedforge.errors import EmbedforgeError


def main(argv: list[str] | None = None, prog: str = "embedforge ingest") -> int:
    """Parse ``argv``, ingest, print the summary; returns the exit code."""
    d = compose_defaults("data=folder").data
    ap = parser(prog, __doc__)
    ap.add_argument(
        "path", help="folder (recursive) or file: .txt .md .html .pdf .docx .jsonl .csv"
    )
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument(
        "--chunk-tokens",
        type=int,
        default=None,
        help=f"max tokens per chunk (default: {d.chunk_tokens}) capped to what the model reads"
        f" ({d.max_seq_length} tokens for the default model, specials included)",
    )
    ap.add_argument(
        "--overlap",
        type=int,
        default=None,
        help=f"tokens between chunks (default: {d.overlap_tokens}, at most half a chunk)",
    )
    ap.add_argument(
        "--min-tokens", type=int, default=None,
        help=f"shorter chunks dropped (default: {d.min_tokens}, at most a chunk)",
    )  # fmt: skip
    ap.add_argument("--model", default=d.tokenizer, help="whose tokenizer counts tokens")
    ap.add_argument(
        "--near-dup", type=float, default=d.near_dup_threshold, help="shingle Jaccard (1 = off)"
    )
    ap.add_argument("--csv-text-column", default=d.csv_text_column)
    ap.add_argument(
        "--max-file-mb", type=float, default=d.max_file_mb, help="larger files are skipped"
    )
    ap.add_argument("--force", action="store_true", help="ignore the cached output")
    args = parse(ap, argv)
    if not Path(args.path).expanduser().exists():  # before the slow imports
        raise EmbedforgeError(f"input path not found: {Path(args.path).expanduser().resolve()}")
    require("ingest", ["pypdf", "docx", "charset_normalizer"])
    from embedforge.data.folder import load_tokenizer
    from embedforge.data.ingest import ingest, summary_lines

    if args.model == "tiny":
        from embedforge.models.encoder import Encoder

        tokenizer = Encoder.tiny().model.tokenizer
    else:
        tokenizer = load_tokenizer(args.model)
    from embedforge.data.folder import FolderSource

    # as data=folder does: the config's sizes, the chunk capped to the model; given flags win
    length = d.max_seq_length if args.model == d.tokenizer else None
    if args.model == "tiny":
        length = compose_defaults("data=folder", "model=tiny").data.max_seq_length
    source = FolderSource(
        args.path,
        chunk_tokens=args.chunk_tokens or d.chunk_tokens,
        max_seq_length=length if args.chunk_tokens is None else None,
        doc_prefix=d.doc_prefix,
        overlap_tokens=d.overlap_tokens,
        min_tokens=d.min_tokens,
    )
    sizes = source.chunking(tokenizer)
    given = {"overlap_tokens": args.overlap, "min_tokens": args.min_tokens}
    sizes.update({k: v for k, v in given.items() if v is not None})
    _, report = ingest(
        args.path, tokenizer, **sizes, out_dir=args.out, near_dup_threshold=args.near_dup,
        csv_text_column=args.csv_text_column, force=args.force, max_file_mb=args.max_file_mb,
    )  # fmt: skip
    print("\n".join(summary_lines(report)))
    print(f"wrote {args.out}/chunks.jsonl and {args.out}/ingest_report.json")
    return 0
