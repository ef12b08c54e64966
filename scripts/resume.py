"""Resume an interrupted run in its own directory from checkpoints/last.ckpt.

    python scripts/resume.py RUN_DIR [override ...]

Composes RUN_DIR/.hydra/config.yaml with ``resume=true`` and trains into RUN_DIR: weights,
optimizer, LR scheduler, loop counters, best-checkpoint tracking, RNG (reseeded per step) and the
position in the epoch continue from the last checkpoint (written at every validation, i.e. every
``trainer.val_check_interval`` steps). Without a checkpoint the run starts over. Same as
``python train.py --config-path RUN_DIR/.hydra --config-name config resume=true hydra.run.dir=RUN_DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedforge.errors import EmbedforgeError  # noqa: E402
from embedforge.rerun import rerun  # noqa: E402
from embedforge.runs import is_run_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument(
        "overrides", nargs="*", help="key=value applied to the saved config (e.g. ~callbacks.crash)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("embedforge").setLevel(logging.INFO)
    try:
        from pathlib import Path

        run = Path(args.run_dir)
        if not is_run_dir(run):
            raise EmbedforgeError(f"{run} is not a run directory: .hydra/config.yaml is missing")
        last = run / "checkpoints" / "last.ckpt"
        print(
            f"resuming {run} from {last}" if last.exists() else f"no {last}: starting {run} over",
            file=sys.stderr,
        )
        value = rerun(run, run, ["resume=true", *args.overrides])
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {value:.6f} ({run / 'metrics.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
