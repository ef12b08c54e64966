"""Fine-tune an embedding model: ``python train.py [group=option ...] [key=value ...] [-m]``.

The same as ``embedforge train`` (``src/embedforge/cli/train.py``), for a checkout.
"""

import sys

from embedforge.cli import stage_main

main = stage_main("train")

if __name__ == "__main__" and (code := main()):  # in-process callers (runpy) see no exit on success
    sys.exit(code)
