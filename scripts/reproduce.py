"""Re-run a run from its saved config and diff the new metrics.json against the old one.

The same as ``embedforge reproduce`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("reproduce")

if __name__ == "__main__":
    sys.exit(main())
