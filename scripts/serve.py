"""Serve a model: OpenAI-compatible embeddings with micro-batching.

The same as ``embedforge serve`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("serve")

if __name__ == "__main__":
    sys.exit(main())
