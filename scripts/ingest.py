"""Ingest a folder or file of documents into ``chunks.jsonl`` + ``ingest_report.json``.

    python scripts/ingest.py PATH --out DIR [--chunk-tokens 384] [--overlap 64] [--min-tokens 16]
        [--model packaged:all-MiniLM-L6-v2|tiny|<dir or hub id>] [--near-dup 0.9]
        [--csv-text-column text] [--max-file-mb 100] [--force]

Prints a summary; a rerun with the same files, settings and tokenizer reuses the output. Any input
problem is one line ``error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedforge.errors import EmbedforgeError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "path", help="folder (recursive) or file: .txt .md .html .pdf .docx .jsonl .csv"
    )
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--chunk-tokens", type=int, default=384)
    ap.add_argument("--overlap", type=int, default=64, help="overlap tokens between chunks")
    ap.add_argument("--min-tokens", type=int, default=16)
    ap.add_argument(
        "--model", default="packaged:all-MiniLM-L6-v2", help="whose tokenizer counts tokens"
    )
    ap.add_argument(
        "--near-dup", type=float, default=0.9, help="shingle Jaccard threshold (1 = off)"
    )
    ap.add_argument("--csv-text-column", default="text")
    ap.add_argument("--max-file-mb", type=float, default=100.0, help="larger files are skipped")
    ap.add_argument("--force", action="store_true", help="ignore the cached output")
    args = ap.parse_args(argv)
    try:
        if not Path(args.path).expanduser().exists():  # before the slow imports
            raise EmbedforgeError(f"input path not found: {Path(args.path).expanduser().resolve()}")
        from embedforge.data.folder import load_tokenizer
        from embedforge.data.ingest import ingest, summary_lines

        if args.model == "tiny":
            from embedforge.models.encoder import Encoder

            tokenizer = Encoder.tiny().model.tokenizer
        else:
            tokenizer = load_tokenizer(args.model)
        _, report = ingest(
            args.path, tokenizer, chunk_tokens=args.chunk_tokens, overlap_tokens=args.overlap,
            min_tokens=args.min_tokens, out_dir=args.out, near_dup_threshold=args.near_dup,
            csv_text_column=args.csv_text_column, force=args.force, max_file_mb=args.max_file_mb,
        )  # fmt: skip
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(f"wrote {args.out}/chunks.jsonl and {args.out}/ingest_report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
