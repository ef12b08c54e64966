"""Compare runs: a table sorted by the monitored metric, with the config keys that differ.

The same as ``embedforge compare`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("compare")

if __name__ == "__main__":
    sys.exit(main())
