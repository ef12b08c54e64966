"""Ingest a folder or file of documents into ``chunks.jsonl`` + ``ingest_report.json``.

The same as ``embedforge ingest`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("ingest")

if __name__ == "__main__":
    sys.exit(main())
