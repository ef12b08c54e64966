"""Export a run's model (or a model dir) to ONNX fp32 + int8, check both, write export_report.json.

The same as ``embedforge export`` (``--help`` for its arguments).
"""

import sys

from embedforge.cli import stage_main

main = stage_main("export")

if __name__ == "__main__":
    sys.exit(main())
