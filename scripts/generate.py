"""Generate training pairs from a data source's chunks with the configured generator.

    python scripts/generate.py generator=anthropic data=folder data.path=DIR
    python scripts/generate.py generator=openai generator.base_url=http://localhost:8000/v1 \
        generator.model=Qwen/Qwen2.5-7B-Instruct data=beir data.path=../shared/data/legal-summarization

Writes ``pairs.jsonl`` and ``generate_stats.json`` into the Hydra run directory. A run that yields
no pairs writes only the stats and exits 2 with one line saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from embedforge.errors import EmbedforgeError


def run(cfg: DictConfig) -> Path:
    from hydra.utils import instantiate

    from embedforge.io import write_json, write_jsonl

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


@hydra.main(config_path="../conf", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
