"""``embedforge``: one command, a subcommand per stage (``embedforge <stage> --help``).

``train`` and ``generate`` take Hydra overrides (``-m`` sweeps, ``--config-dir`` overlays); the
others are argparse commands whose defaults are composed from the same config. ``python train.py``
and ``scripts/*.py`` in a checkout are thin wrappers of these.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

from embedforge import __version__
from embedforge.errors import EmbedforgeError

COMMANDS = {
    "train": "fine-tune: pairs -> training -> baseline vs fine-tuned report (Hydra overrides, -m)",
    "ingest": "documents (txt md html pdf docx jsonl csv) -> deduplicated chunks.jsonl",
    "generate": "chunks -> training pairs with the configured generator (Hydra overrides)",
    "mine": "add hard negatives mined with a model to a pairs file",
    "evaluate": "metrics of any model on a BEIR dataset",
    "export": "ONNX fp32 + int8 with parity and retrieval checks",
    "serve": "OpenAI-compatible embeddings server with micro-batching",
    "judge": "judge a run blind in the browser: pooled base vs fine-tuned results -> judged qrels",
    "compare": "table of runs sorted by the monitored metric, with the keys that differ",
    "reproduce": "re-run a run from its saved config and diff the metrics",
    "resume": "continue an interrupted run from its last checkpoint",
    "push": "upload a run's model (and ONNX) to the Hugging Face Hub",
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: embedforge [--quiet] <command> [args] (embedforge <command> --help)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "--quiet: no progress bars or progress lines (also: the config key progress=false)",
    ]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> int:
    """Run one subcommand; an :class:`EmbedforgeError` is one ``error:`` line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("embedforge.progress").setLevel(logging.INFO)
    module = importlib.import_module(f"embedforge.cli.{name}")
    try:
        return module.main(argv, prog=f"embedforge {name}")
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def stage_main(name: str) -> Callable[[list[str] | None], int]:
    """``main(argv=None) -> exit code`` of one subcommand (what ``scripts/<stage>.py`` runs)."""

    def main(argv: list[str] | None = None) -> int:
        return run_command(name, list(sys.argv[1:] if argv is None else argv))

    return main


def main(argv: list[str] | None = None) -> int:
    """The ``embedforge`` console command."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet = bool(args) and args[0] == "--quiet"
    args = args[1:] if quiet else args
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        print(f"embedforge {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(
            f"error: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    return run_command(args[0], [*args[1:], *(["--quiet"] if quiet else [])])
