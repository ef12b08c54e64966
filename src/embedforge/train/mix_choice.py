"""Real validation chooses the synthetic share of a run that has both real and generated pairs.

Generated pairs help where the base model has a domain to learn and hurt where it already knows
it (docs/real-queries.md); a run whose validation set holds real queries can tell which. Before
the main run, each candidate (the real pairs alone, and the configured mix) trains for
``data.mix_select_steps`` steps from the base weights; both are scored on the real validation
set, the one that validates better trains the run (a tie keeps the real pairs alone), and the
base weights come back. The cost is the probes' steps plus two validations, logged and written to
``metrics.json`` ``mix_choice`` with the paired interval of the difference. The choice is kept
in ``mix_choice.json`` in the run directory, so a resumed run trains on the same pairs without
probing again.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from embedforge.config import build
from embedforge.data.validation import DEV_SPLIT, HELD_OUT_REAL
from embedforge.eval.retrieval import EvalResult, RetrievalSet
from embedforge.eval.ship import SHIP_METRIC
from embedforge.eval.significance import paired_delta
from embedforge.io import write_json
from embedforge.types import BatchGroups, Pair

log = logging.getLogger("embedforge")

REAL_ONLY, MIXED = "real only", "real + generated"
CHOICE_FILE = "mix_choice.json"


def candidates(pairs: list[Pair]) -> dict[str, list[Pair]] | None:
    """The real pairs alone and the whole mix, or None when there is nothing to choose (no real
    pairs, no generated ones, or fewer than two real pairs)."""
    real = [p for p in pairs if p.get("source", "real") == "real"]
    if len(real) < 2 or len(real) == len(pairs):
        return None
    return {REAL_ONLY: real, MIXED: pairs}


def planned_steps(cfg: DictConfig, n_pairs: int) -> int:
    """Optimizer steps the main run will take on ``n_pairs`` pairs (``trainer.max_steps``, else
    ``max_epochs`` passes of ``data.batch_size``)."""
    max_steps = int(cfg.trainer.get("max_steps", -1) or -1)
    per_epoch = math.ceil(n_pairs / int(cfg.data.batch_size))
    by_epochs = int(cfg.trainer.get("max_epochs", 1) or 1) * per_epoch
    return max_steps if max_steps > 0 else by_epochs


def probe_steps(setting: Any, planned: int) -> int:
    """``data.mix_select_steps``: ``auto`` is a quarter of the run's steps (at least 10, at most
    the run); a number is used as it is; 0 or null turns the choice off."""
    if setting in (None, 0, False):
        return 0
    if setting == "auto":
        return min(planned, max(10, planned // 4))
    return int(setting)


def choose_mix(
    cfg: DictConfig,
    module: Any,
    pairs: list[Pair],
    val_set: RetrievalSet,
    world_size: int,
    new_module: Callable[[], Any],
    batch_groups: Callable[[list[Pair]], BatchGroups | None] = lambda pairs: None,
) -> tuple[list[Pair], dict[str, Any] | None]:
    """The pairs the run trains on and the record of how they were chosen (None: not chosen).

    ``module`` is the run's :class:`~embedforge.train.module.ContrastiveModule` (its encoder holds
    the base weights, and holds them again on return); ``new_module()`` builds a fresh module
    around the same encoder, as the run's is built, for each probe; ``batch_groups(pairs)``
    batches each probe as the run batches (``DataSource.batch_groups``)."""
    options = candidates(pairs)
    steps = probe_steps(cfg.data.get("mix_select_steps"), planned_steps(cfg, len(pairs)))
    if options is None or steps <= 0:
        return pairs, None
    if world_size > 1:  # ranks > 0 hold no validation set (pipeline.rank0_pairs)
        log.info(
            "mix choice: off under DDP (choose with data.mix_synthetic, or run it on one device)"
        )
        return pairs, None
    if val_set.info.get("kind") not in (DEV_SPLIT, HELD_OUT_REAL):
        log.info("mix choice: off (validation is %s, not real queries)", val_set.info.get("kind"))
        return pairs, None
    path = Path(cfg.paths.output_dir) / CHOICE_FILE
    if cfg.get("resume") and path.is_file():  # a resumed run trains on what it chose
        record = json.loads(path.read_text())
        if record.get("chosen") in options:
            log.info("mix choice: %s (from %s)", record["chosen"], path)
            return options[record["chosen"]], record
    t = time.perf_counter()
    base_state = copy.deepcopy(module.encoder.state_dict())
    results: dict[str, EvalResult] = {}
    for name, chosen in options.items():
        log.info("mix choice: %d steps on %s (%d pairs)", steps, name, len(chosen))
        results[name] = probe(cfg, new_module(), chosen, steps, batch_groups(chosen))
        module.encoder.load_state_dict(base_state)
    qids = sorted(results[REAL_ONLY].per_query)
    delta = paired_delta(
        [results[REAL_ONLY].per_query[q][SHIP_METRIC] for q in qids],
        [results[MIXED].per_query[q][SHIP_METRIC] for q in qids],
        seed=int(cfg.seed),
    )
    chosen_name = MIXED if delta["delta"] > 0 else REAL_ONLY
    record = {
        "chosen": chosen_name,
        "steps_each": steps,
        "extra_steps": 2 * steps,
        "tried": {
            name: {"pairs": len(options[name]), f"val/{SHIP_METRIC}": r.metrics[SHIP_METRIC]}
            for name, r in results.items()
        },
        "mixed_minus_real": delta,
        "val_set": val_set.name,
        "n_queries": len(qids),
        "seconds": round(time.perf_counter() - t, 1),
    }
    write_json(path, record)
    log.info(
        "mix choice: %s (val %s of %d real queries: real only %.4f, real + generated %.4f,"
        " difference %+.4f [%+.4f, %+.4f]; %d probe steps, %.0f s)",
        chosen_name,
        SHIP_METRIC,
        len(qids),
        results[REAL_ONLY].metrics[SHIP_METRIC],
        results[MIXED].metrics[SHIP_METRIC],
        delta["delta"],
        delta["low"],
        delta["high"],
        2 * steps,
        record["seconds"],
    )
    return options[chosen_name], record


def probe(
    cfg: DictConfig,
    module: Any,
    pairs: list[Pair],
    steps: int,
    groups: BatchGroups | None = None,
) -> EvalResult:
    """``steps`` optimizer steps of ``module`` (a fresh one: its optimizer and schedule start
    anew) on ``pairs`` (group-dense batches with ``groups``) from its encoder's current weights,
    with the run's trainer settings but no validation, checkpoints or logger; then its scores on
    its validation set, per query."""
    from embedforge.train.datamodule import PairDataModule

    trainer = build(
        cfg.trainer,
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        val_check_interval=None,
        check_val_every_n_epoch=None,
        default_root_dir=str(Path(cfg.paths.output_dir) / "mix_probe"),
    )
    dm = PairDataModule(
        pairs, cfg.data.batch_size, cfg.seed, cfg.data.num_workers, has_val=False, groups=groups
    )
    trainer.fit(module, datamodule=dm)
    return module.validation_result()
