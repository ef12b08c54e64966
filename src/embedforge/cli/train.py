"""``embedforge train [group=option ...] [key=value ...] [-m]``: the whole chain, from the config.

The packaged ``conf/train.yaml`` composed by Hydra exactly as ``python train.py`` in a checkout:
overrides, ``-m`` sweeps, ``--config-dir DIR`` (or a ``conf/`` in the working directory) for your
own config files, ``--help`` for the groups. Writes the run to ``outputs/<task>/<date_time>/``.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig

from embedforge import progress
from embedforge.cli.common import check_command_line, hydra_args, require_for_config, run_hydra
from embedforge.errors import EmbedforgeError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def task(cfg: DictConfig) -> float:
    """One job: train, returning the monitored value; a failed sweep job is recorded, not raised."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from embedforge.pipeline import train

    logging.getLogger("embedforge").setLevel(logging.INFO)
    progress.configure(cfg.get("progress", True))
    try:
        require_for_config("train", cfg)
        return train(cfg)
    except Exception as e:  # in a sweep, record the failed job and let the others run
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            if isinstance(e, EmbedforgeError):
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            raise
        from embedforge.runs import RunDirBusy, record_failure

        hc = HydraConfig.get()
        if isinstance(e, RunDirBusy):  # the dir is another run's: leave its files alone
            logging.getLogger("embedforge").error("job %s failed: %s", hc.job.num, e)
            return float("nan")
        path = record_failure(hc.runtime.output_dir, e, list(hc.overrides.task))
        logging.getLogger("embedforge").error("job %s failed (%s): %s", hc.job.num, path, e)
        return float("nan")


def main(argv: list[str] | None = None, prog: str = "embedforge train") -> int:
    """Run ``task`` under Hydra with ``argv`` (default: ``sys.argv[1:]``).

    The command line is composed and validated first (:func:`check_command_line`): a bad key,
    value, option or path is one ``error:`` line in seconds, before torch or a model loads.
    """
    cfg = check_command_line(*reversed(hydra_args(argv)))
    if cfg is not None:
        require_for_config("train", cfg)
    run_hydra(task, argv, prog)
    return 0
