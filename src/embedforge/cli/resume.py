"""Resume an interrupted run in its own directory from checkpoints/last.ckpt.

    embedforge resume RUN_DIR [override ...]

Composes RUN_DIR/.hydra/config.yaml with ``resume=true`` and trains into RUN_DIR: weights,
optimizer, LR scheduler, loop counters, best-checkpoint tracking, RNG (reseeded per step) and the
position in the epoch continue from the last checkpoint (written at every validation, i.e. every
``trainer.val_check_interval`` steps). Without a checkpoint the run starts over. Only
``_target_`` s in embedforge and the libraries it configures are built unless ``--trust``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from embedforge.cli.common import TRUST_HELP, parse, parser, require_for_config

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None, prog: str = "embedforge resume") -> int:
    """Parse ``argv`` and continue the run; returns the exit code."""
    from embedforge.rerun import rerun
    from embedforge.runs import load_config

    ap = parser(prog, __doc__)
    ap.add_argument("run_dir")
    ap.add_argument(
        "overrides", nargs="*", help="key=value applied to the saved config (e.g. ~callbacks.crash)"
    )
    ap.add_argument("--trust", action="store_true", help=TRUST_HELP)
    args = parse(ap, argv)
    logging.getLogger("embedforge").setLevel(logging.INFO)
    run = Path(args.run_dir)
    require_for_config("resume", load_config(run))
    last = run / "checkpoints" / "last.ckpt"
    print(
        f"resuming {run} from {last}" if last.exists() else f"no {last}: starting {run} over",
        file=sys.stderr,
    )
    value = rerun(run, run, ["resume=true", *args.overrides], trust=args.trust)
    print(f"done: {value:.6f} ({run / 'metrics.json'})")
    return 0
