"""``python -m embedforge`` = the ``embedforge`` command."""

import sys

from embedforge.cli import main

sys.exit(main())
