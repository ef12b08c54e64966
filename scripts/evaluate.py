"""Evaluate a model on a BEIR dataset.

The same as ``embedforge evaluate`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("evaluate")

if __name__ == "__main__":
    sys.exit(main())
