"""Fine-tune an embedding model: ``python train.py [group=option ...] [key=value ...]``."""

import logging
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from embedforge.errors import EmbedforgeError  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from embedforge.pipeline import train

    logging.getLogger("embedforge").setLevel(logging.INFO)
    try:
        return train(cfg)
    except Exception as e:  # in a sweep, record the failed job and let the others run
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            if isinstance(e, EmbedforgeError):
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            raise
        from embedforge.runs import record_failure

        hc = HydraConfig.get()
        path = record_failure(hc.runtime.output_dir, e, list(hc.overrides.task))
        logging.getLogger("embedforge").error("job %s failed (%s): %s", hc.job.num, path, e)
        return float("nan")


if __name__ == "__main__":
    main()
