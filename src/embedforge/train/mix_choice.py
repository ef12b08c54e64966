"""Real validation chooses the synthetic share of a run that has both real and generated pairs.

Generated pairs help where the base model has a domain to learn and hurt where it already knows
it (docs/real-queries.md); a run whose validation set holds real queries can tell which. Before
the main run, each candidate (the real pairs alone, and the configured mix) trains the run's
first ``data.mix_select_steps`` steps from the base weights (its batches, LR schedule and per-step
seeds); both are scored on the real validation set, the one that validates better trains the run
(a tie keeps the real pairs alone), and the base weights come back. When the probes end before
the run's first validation, the run continues from the winning probe's checkpoint, exactly as if
it had trained on those pairs from the start, so the choice costs the other probe's steps plus
two validations; otherwise the run starts again from the base weights. Logged and written to
``metrics.json`` ``mix_choice`` with the paired interval of the difference. The choice is kept
in ``mix_choice.json`` in the run directory, so a resumed run trains on the same pairs without
probing again.

The probes cost the losing candidate's steps and two validations, and where the generated pairs
are offline ones they are first asked whether the corpus has anything for them to teach
(``data.mix_select_check``): offline pairs were measured to help only where BM25 is significantly
ahead of the base model on the documents' own offline queries
(:func:`~embedforge.generate.label_free.lexical_margin`, docs/offline-pairs.md); where it is
not, the run keeps the real pairs alone without probing."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from embedforge.config import build
from embedforge.data.validation import DEV_SPLIT, HELD_OUT_REAL
from embedforge.eval.retrieval import EvalResult, RetrievalSet
from embedforge.eval.ship import SHIP_METRIC
from embedforge.eval.significance import paired_delta
from embedforge.io import write_json
from embedforge.train.resume import ResumableTraining
from embedforge.types import Pair

log = logging.getLogger("embedforge")

REAL_ONLY, MIXED = "real only", "real + generated"
CHOICE_FILE = "mix_choice.json"
PROBE_DIR = "mix_probe"  # the probes' trainer root and the winner's checkpoint
PROBE_FILES = {REAL_ONLY: "real_only.ckpt", MIXED: "real_and_generated.ckpt"}


def candidates(pairs: list[Pair]) -> dict[str, list[Pair]] | None:
    """The real pairs alone and the whole mix, or None when there is nothing to choose (no real
    pairs, no generated ones, or fewer than two real pairs)."""
    real = [p for p in pairs if p.get("source", "real") == "real"]
    if len(real) < 2 or len(real) == len(pairs):
        return None
    return {REAL_ONLY: real, MIXED: pairs}


def schedule_steps(trainer_cfg: DictConfig, n_batches: int) -> int:
    """Optimizer steps a run with these trainer settings takes over ``n_batches`` batches an
    epoch: Lightning's ``Trainer.estimated_stepping_batches`` (``max_steps``, else ``max_epochs``
    passes; one step a batch, as ``trainer.accumulate_grad_batches`` must stay 1), computed before
    a trainer exists, so that a probe trains the first steps of the run's own LR schedule."""
    max_steps = int(trainer_cfg.get("max_steps", -1) or -1)
    max_epochs = trainer_cfg.get("max_epochs")
    max_epochs = 1000 if max_epochs is None and max_steps == -1 else int(max_epochs or -1)
    if max_epochs == -1:
        return max_steps
    by_epochs = n_batches * max(max_epochs, 1)
    return min(by_epochs, max_steps) if max_steps != -1 else by_epochs


def first_validation_step(trainer_cfg: DictConfig, n_batches: int) -> int | None:
    """The optimizer step after which the run validates first (None: it never validates; 1 for
    a time-based interval: it may validate after any step)."""
    if float(trainer_cfg.get("limit_val_batches", 1.0) or 0) == 0:
        return None
    interval = trainer_cfg.get("val_check_interval", 1.0)
    every = trainer_cfg.get("check_val_every_n_epoch", 1)
    if interval is None:
        interval = 1.0
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        return 1
    if isinstance(interval, float):  # a fraction of an epoch
        first = max(1, int(n_batches * interval))
    else:
        first = int(interval)
    return first + (int(every) - 1) * n_batches if every else first


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
    datamodule: Callable[[list[Pair]], Any],
    check: Callable[[list[Pair]], dict[str, Any] | None] | None = None,
) -> tuple[list[Pair], dict[str, Any] | None]:
    """The pairs the run trains on and the record of how they were chosen (None: not chosen).

    ``module`` is the run's :class:`~embedforge.train.module.ContrastiveModule` (its encoder holds
    the base weights, and holds them again on return); ``new_module()`` builds a fresh module
    around the same encoder, as the run's is built, for each probe; ``datamodule(pairs)`` serves
    pairs as the run's training serves them (``pipeline.train_datamodule``: same sampler, seed
    and batch layout). Each probe is the first steps of the run on its candidate; when they end
    before the run's first validation, the winner's checkpoint is kept and the record's
    ``continue_from`` names it: the run continues from it instead of training those steps again
    (exactly, :mod:`embedforge.train.resume`). ``check(pairs)``, when given, is asked first
    (:func:`embedforge.generate.label_free.mix_check`: the corpus's lexical margin with the base
    model, None where it does not speak for the generated pairs): unless its ``bm25_ahead``, the
    real pairs alone train without probes."""
    options = candidates(pairs)
    setting = cfg.data.get("mix_select_steps")
    if options is None or probe_steps(setting, 1) <= 0:  # nothing to choose, or turned off
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
    checked = check(pairs) if check is not None else None
    if checked is not None and not checked["bm25_ahead"]:
        return options[REAL_ONLY], lexical_choice(path, options, checked, time.perf_counter() - t)
    probes = run_probes(cfg, module, options, new_module, datamodule, setting)
    record = validation_choice(cfg, path, options, probes, checked, val_set, t)
    return options[record["chosen"]], record


def validation_choice(
    cfg: DictConfig,
    path: Path,
    options: dict[str, list[Pair]],
    probes: tuple[int, dict[str, EvalResult], dict[str, Path | None]],
    checked: dict[str, Any] | None,
    val_set: RetrievalSet,
    started: float,
) -> dict[str, Any]:
    """The record (written to ``path``) of the choice the probes' validation made (a tie keeps
    the real pairs alone); the losing probe's checkpoint is deleted. ``checked``: what the corpus
    check said first (BM25 ahead), None when it was not asked or did not speak."""
    steps, results, saved = probes
    qids = sorted(results[REAL_ONLY].per_query)
    delta = paired_delta(
        [results[REAL_ONLY].per_query[q][SHIP_METRIC] for q in qids],
        [results[MIXED].per_query[q][SHIP_METRIC] for q in qids],
        seed=int(cfg.seed),
    )
    chosen_name = MIXED if delta["delta"] > 0 else REAL_ONLY
    for name, ckpt in saved.items():  # the other probe's checkpoint is of no further use
        if name != chosen_name and ckpt is not None:
            ckpt.unlink(missing_ok=True)
    winner = saved[chosen_name]
    record = {
        "chosen": chosen_name,
        "decided_by": "validation",
        "lexical_margin": checked,
        "steps_each": steps,
        # the winner's probe steps are the run's first steps when the run continues from them
        "extra_steps": steps if winner else 2 * steps,
        "continue_from": str(winner) if winner else None,
        "tried": {
            name: {"pairs": len(options[name]), f"val/{SHIP_METRIC}": r.metrics[SHIP_METRIC]}
            for name, r in results.items()
        },
        "mixed_minus_real": delta,
        "val_set": val_set.name,
        "n_queries": len(qids),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(path, record)
    log.info(
        "mix choice: %s (val %s of %d real queries: real only %.4f, real + generated %.4f,"
        " difference %+.4f [%+.4f, %+.4f]; %d probe steps, %.0f s)%s",
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
        f"; the run continues from its step {steps}" if winner else "",
    )
    return record


def lexical_choice(
    path: Path, options: dict[str, list[Pair]], margin: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The record (written to ``path``) of a choice the corpus check made: the real pairs alone,
    no probe trained."""
    record = {
        "chosen": REAL_ONLY,
        "decided_by": margin["signal"],
        "lexical_margin": margin,
        "steps_each": 0,
        "extra_steps": 0,
        "continue_from": None,
        "tried": {},
        "pairs": {name: len(chosen) for name, chosen in options.items()},
        "seconds": round(seconds, 1),
    }
    write_json(path, record)
    log.info(
        "mix choice: %s, without probes: on %d offline queries of the documents the base model"
        " scores %.4f, BM25 %.4f (margin %+.4f [%+.4f, %+.4f]); BM25 is not significantly ahead,"
        " and offline pairs were measured to help only where it is (%.0f s;"
        " data.mix_select_check=null: probe anyway)",
        REAL_ONLY,
        margin["n_queries"],
        margin["base"],
        margin["bm25"],
        margin["margin"],
        margin["low"],
        margin["high"],
        seconds,
    )
    return record


def run_probes(
    cfg: DictConfig,
    module: Any,
    options: dict[str, list[Pair]],
    new_module: Callable[[], Any],
    datamodule: Callable[[list[Pair]], Any],
    setting: Any,
) -> tuple[int, dict[str, EvalResult], dict[str, Path | None]]:
    """Train each candidate's probe from the base weights (restored after each) and score it on
    validation: the probes' length, their results, and where each probe's checkpoint was kept
    (None: the run would have validated within the probe's steps, so it cannot continue it)."""
    loaders = {name: datamodule(chosen) for name, chosen in options.items()}
    batches = {name: len(dm.train_dataloader()) for name, dm in loaders.items()}
    planned = {name: schedule_steps(cfg.trainer, n) for name, n in batches.items()}
    steps = probe_steps(setting, planned[MIXED])
    base_state = copy.deepcopy(module.encoder.state_dict())
    results: dict[str, EvalResult] = {}
    saved: dict[str, Path | None] = {}
    for name, chosen in options.items():
        first = first_validation_step(cfg.trainer, batches[name])
        keep = first is None or steps < first  # the run would not have validated meanwhile
        saved[name] = Path(cfg.paths.output_dir) / PROBE_DIR / PROBE_FILES[name] if keep else None
        log.info("mix choice: %d steps on %s (%d pairs)", steps, name, len(chosen))
        results[name] = probe(cfg, new_module(), loaders[name], steps, planned[name], saved[name])
        module.encoder.load_state_dict(base_state)
    return steps, results, saved


def continuation(record: dict[str, Any] | None) -> str | None:
    """The checkpoint a run continues from after its mix choice (None: it starts from the base
    weights, also when the checkpoint is gone: the same steps are then trained again)."""
    ckpt = (record or {}).get("continue_from")
    return ckpt if ckpt and Path(ckpt).is_file() else None


def probe(
    cfg: DictConfig,
    module: Any,
    datamodule: Any,
    steps: int,
    schedule: int,
    save_to: Path | None = None,
) -> EvalResult:
    """The first ``steps`` optimizer steps of the run on ``datamodule``'s pairs, from the
    ``module``'s (a fresh one) encoder's current weights: the run's trainer settings, its LR
    schedule of ``schedule`` steps and its per-step seeds, but no validation, logger or
    checkpoint callback; ``save_to``: where the state after the last step is written (weights,
    optimizer, schedule, data position), for the run to continue from. Then its scores on its
    validation set, per query."""
    trainer = build(
        cfg.trainer,
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        callbacks=[ResumableTraining(int(cfg.seed))]
        + ([SaveAtStep(steps, save_to)] if save_to else []),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        val_check_interval=None,
        check_val_every_n_epoch=None,
        default_root_dir=str(Path(cfg.paths.output_dir) / PROBE_DIR),
    )
    module.schedule_steps = schedule
    trainer.fit(module, datamodule=datamodule)
    return module.validation_result()


class SaveAtStep(pl.Callback):
    """Write the trainer's checkpoint after optimizer step ``step``, where
    ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` (so a resume from it is exact)."""

    def __init__(self, step: int, path: Path):
        self.step, self.path = int(step), Path(path)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            trainer.save_checkpoint(tmp)
            tmp.replace(self.path)
