"""Fine-tune an embedding model: ``python train.py [group=option ...] [key=value ...]``."""

import logging
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from embedforge.errors import EmbedforgeError  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from embedforge.pipeline import train

    logging.getLogger("embedforge").setLevel(logging.INFO)
    try:
        return train(cfg)
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
