"""Generate training pairs from a data source's chunks with the configured generator.

The same as ``embedforge generate`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("generate")

if __name__ == "__main__":
    sys.exit(main())
