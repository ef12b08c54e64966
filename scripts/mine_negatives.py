"""Mine hard negatives for a pairs file with the base model.

The same as ``embedforge mine`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("mine")

if __name__ == "__main__":
    sys.exit(main())
