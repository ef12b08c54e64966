"""Resume an interrupted run in its own directory from checkpoints/last.ckpt.

The same as ``embedforge resume`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("resume")

if __name__ == "__main__":
    sys.exit(main())
