"""Re-run a run from its saved config and diff the new metrics.json against the old one.

    embedforge reproduce RUN_DIR [--tolerance 1e-6] [--out NEW_RUN_DIR] [override ...]

Composes RUN_DIR/.hydra/config.yaml (not today's conf/), trains into a new run dir, then compares
baseline, fine-tuned, deltas, validation values, selected model, data sizes and the training-pair
hash. Exit 0: reproduced within the tolerance; 1: mismatch (listed); 2: error. Same as
``embedforge train --config-path RUN_DIR/.hydra --config-name config hydra.run.dir=NEW``.
Only ``_target_`` s in embedforge and the libraries it configures are built from a saved config
unless ``--trust``: a run dir from someone else could otherwise run any code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from embedforge.cli.common import TRUST_HELP, parse, parser, require_for_config
from embedforge.errors import EmbedforgeError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def reproduce(
    run_dir: str | Path,
    out: str | Path | None = None,
    tolerance: float = 1e-6,
    overrides: list[str] | None = None,
    trust: bool = False,
) -> tuple[Path, list[str], list[str]]:
    """Re-run ``run_dir``; returns (new run dir, mismatches, provenance notes)."""
    from embedforge.rerun import rerun
    from embedforge.runs import (
        diff_metrics,
        load_config,
        load_summary,
        provenance_notes,
        read_json_object,
    )

    old = load_summary(run_dir)
    if old.status != "ok":
        raise EmbedforgeError(
            f"{old.path} has no metrics.json to compare against (status: {old.status})"
        )
    require_for_config("reproduce", load_config(old.path))
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    new_dir = Path(out) if out else Path("outputs") / "reproduce" / f"{old.path.name}_{stamp}"
    if (new_dir / "metrics.json").exists():
        raise EmbedforgeError(f"{new_dir} already holds a run: choose another --out")
    rerun(old.path, new_dir, ["resume=false", *(overrides or [])], trust=trust)
    new = read_json_object(new_dir / "metrics.json")
    return new_dir, diff_metrics(old.metrics, new, tolerance), provenance_notes(old.metrics, new)


def main(argv: list[str] | None = None, prog: str = "embedforge reproduce") -> int:
    """Parse ``argv``, re-run and diff; returns 0 (reproduced), 1 (mismatch) or 2 (error)."""
    ap = parser(prog, __doc__)
    ap.add_argument("run_dir")
    ap.add_argument(
        "overrides",
        nargs="*",
        help="key=value applied to the saved config (e.g. trainer.devices=1)",
    )
    ap.add_argument("--tolerance", type=float, default=1e-6, help="absolute, on every number")
    ap.add_argument(
        "--out", default=None, help="new run dir (default: outputs/reproduce/<run>_<time>)"
    )
    ap.add_argument("--trust", action="store_true", help=TRUST_HELP)
    args = parse(ap, argv)
    new_dir, mismatches, notes = reproduce(
        args.run_dir, args.out, args.tolerance, args.overrides, trust=args.trust
    )
    for n in notes:
        print(f"note: {n}")
    if mismatches:
        print(
            f"NOT reproduced ({len(mismatches)} mismatches beyond {args.tolerance:g}); new run: {new_dir}"
        )
        for m in mismatches:
            print(f"  {m}")
        return 1
    print(f"reproduced within {args.tolerance:g}: {new_dir}")
    return 0
