"""``embedforge generate [group=option ...]``: a data source's chunks -> training pairs.

    embedforge generate generator=anthropic data=folder data.path=DIR
    embedforge generate generator=openai generator.base_url=http://localhost:8000/v1 \\
        generator.model=Qwen/Qwen2.5-7B-Instruct data=beir data.path=DIR

Hydra overrides on the packaged config, as ``embedforge train``. Writes ``pairs.jsonl`` and
``generate_stats.json`` into the Hydra run directory. A run that yields no pairs writes only the
stats and exits 2 with one line saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from embedforge import progress
from embedforge.cli.common import check_command_line, hydra_args, require_for_config, run_hydra
from embedforge.errors import EmbedforgeError


def run(cfg: DictConfig) -> Path:
    """Generate pairs from ``cfg.data``'s chunks with ``cfg.generator``; returns ``pairs.jsonl``."""
    from hydra.utils import instantiate

    from embedforge.io import write_json, write_jsonl

    require_for_config("generate", cfg)
    source = instantiate(cfg.data)
    chunks = source.chunks()
    if not chunks:
        raise EmbedforgeError(
            f"data source {cfg.data.get('_target_')} has no chunks to generate from"
        )
    generator = instantiate(cfg.generator)
    pairs = generator.generate(chunks)
    out_dir = Path(cfg.paths.output_dir)
    stats = getattr(generator, "stats", None) or {"pairs": len(pairs)}
    write_json(out_dir / "generate_stats.json", stats)
    if not pairs:
        why = stats.get("failures") or stats.get("dropped") or "none"
        raise EmbedforgeError(
            f"0 pairs from {len(chunks)} chunks (failures/drops: {why}); no pairs file written,"
            f" see {out_dir / 'generate_stats.json'}"
        )
    out = write_jsonl(out_dir / "pairs.jsonl", pairs)
    print(f"wrote {len(pairs)} pairs from {len(chunks)} chunks to {out}")
    return out


def task(cfg: DictConfig) -> None:
    """The Hydra job: :func:`run`, with input errors as one line and exit code 2."""
    progress.configure(cfg.get("progress", True))
    try:
        run(cfg)
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None, prog: str = "embedforge generate") -> int:
    """Run :func:`task` under Hydra with ``argv`` (default: ``sys.argv[1:]``), the command line
    checked first (:func:`check_command_line`)."""
    check_command_line(*reversed(hydra_args(argv)))
    run_hydra(task, argv, prog)
    return 0
