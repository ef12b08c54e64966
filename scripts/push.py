"""Push a run's model to the Hugging Face Hub.

The same as ``embedforge push`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("push")

if __name__ == "__main__":
    sys.exit(main())
