"""The run behind ``python train.py``, as the stages :func:`train` lists in order.

``build_pairs`` (-> ``pairs.jsonl``) -> ``build_module`` -> ``build_trainer`` -> ``evaluate_base``
-> ``fit`` -> ``select`` -> ``evaluate`` -> ``write_run`` (-> ``model/``, ``metrics.json``,
``report.md``). Each stage is a function with typed inputs and outputs and one job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

import embedforge
from embedforge import progress
from embedforge.config import KEEP_CHECKPOINTS, build, validate
from embedforge.data.diagnostics import pair_diagnostics
from embedforge.data.hard_negatives import mine_for_pipeline
from embedforge.data.sources import DataSource, holdout_sets
from embedforge.data.validation import DEV_SPLIT, GENERATED_EVAL_NOTE, HELD_OUT_SYNTHETIC
from embedforge.errors import EmbedforgeError
from embedforge.eval import retrieval
from embedforge.eval.ann import SearchSettings
from embedforge.eval.matryoshka import TruncatedEncoder, evaluate_dims
from embedforge.eval.retrieval import EvalResult, RetrievalSet
from embedforge.eval.ship import SHIP_METRIC, verdict
from embedforge.eval.significance import delta_significance
from embedforge.export.eval_backend import eval_encoder
from embedforge.export.model_card import base_model_info, write_model_card
from embedforge.generate.label_free import LEXICAL, Guard, build_guard, mix_check, trust_text
from embedforge.io import file_hash, read_jsonl, stable_hash, write_json, write_jsonl
from embedforge.models import encoder as models_encoder
from embedforge.models.encoder import Encoder
from embedforge.per_query import write_per_query
from embedforge.provenance import git_info, set_hash, versions
from embedforge.report import write_report
from embedforge.runs import RunMetrics, flatten, run_dir_lock
from embedforge.secrets import redacted_container
from embedforge.tracking import WandbRunLogger, finishes_wandb
from embedforge.train.datamodule import PairDataModule, equal_negatives, token_lengths
from embedforge.train.distributed import launch_rank_zero
from embedforge.train.log_progress import LogLinesProgress, quiet_lightning
from embedforge.train.mix_choice import choose_mix, continuation
from embedforge.train.module import ContrastiveModule
from embedforge.train.wise import WiseCurve, interpolate, wise_select
from embedforge.types import Pair

log = logging.getLogger("embedforge")

#: the training pairs of a run, as trained on (``data=pairs data.path=<run>/pairs.jsonl`` reuses them)
PAIRS_FILE = "pairs.jsonl"


@finishes_wandb  # one W&B run per job of a multirun, marked failed when the job raises
def train(cfg: DictConfig) -> float:
    """Run the whole chain for one config; returns the monitored validation value of the shipped
    model. The run directory is locked meanwhile (:func:`embedforge.runs.run_dir_lock`)."""
    validate(cfg)
    with run_dir_lock(cfg.paths.output_dir):
        return run_stages(cfg)


def run_stages(cfg: DictConfig) -> float:
    """The stages of :func:`train`, in order, for a validated config."""
    clock = Clock()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data: DataSource = build(cfg.data)
    with clock("load_model"):  # hard negatives are mined with the base model
        encoder: Encoder = build(cfg.model)
    encoder.store = build(cfg.embedding_store) if cfg.get("embedding_store") else None
    train_set = build_pairs(cfg, data, encoder, clock)
    module = build_module(cfg, encoder, train_set.val_set)
    module.check_pairs(train_set.pairs)  # a graded loss needs scored pairs: fail before encoding
    trainer = build_trainer(cfg)
    base = evaluate_base(cfg, module, train_set.eval_set, trainer, clock)
    train_set = choose_pairs(cfg, module, train_set, data, trainer, clock)
    guard = label_free_guard(cfg, data, train_set, encoder, trainer, clock)
    fit(cfg, trainer, module, train_set, data, base, clock)
    if not trainer.is_global_zero:  # under DDP every rank runs train(); rank 0 reports
        return float("nan")
    choice = select(cfg, module, trainer.checkpoint_callback, base, clock)
    choice = guarded(cfg, choice, guard, module, base, clock)
    with clock("finetuned_eval"):
        shared = dims_cache(cfg)  # the per-dimension eval reuses the full eval's embeddings
        result = evaluate(cfg, encoder, train_set.eval_set, shared)
        dims = evaluate_at_dims(cfg, encoder, train_set.eval_set, shared)
    metrics = write_run(cfg, data, train_set, trainer, base, choice, result, clock, dims)
    prune_checkpoints(
        Path(trainer.checkpoint_callback.dirpath), cfg.get("keep_checkpoints", "none")
    )
    return float(metrics.monitor_value)


def prune_checkpoints(folder: Path, keep: str) -> None:
    """After a finished run, delete the checkpoints ``keep_checkpoints`` does not name.

    ``model/`` already holds the shipped weights and a finished run has nothing to resume, so the
    default ``none`` keeps a sweep's run dirs small (two MiniLM checkpoints: ~540 MB a run).
    """
    kept = {p for pattern in KEEP_CHECKPOINTS[keep] for p in folder.glob(pattern)}
    removed = [p for p in sorted(folder.glob("*.ckpt")) if p not in kept]
    for p in removed:
        p.unlink()
    if removed:
        log.info(
            "checkpoints: removed %s (keep_checkpoints=%s; model/ holds the shipped weights)",
            ", ".join(p.name for p in removed),
            keep,
        )


class Clock:
    """Wall seconds per stage, in the order the stages ran; ``total`` since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - t

    def stop(self) -> dict[str, float]:
        self.seconds["total"] = time.perf_counter() - self.start
        return {k: round(v, 2) for k, v in self.seconds.items()}


# ---------------------------------------------------------------------------------------- pairs
@dataclass
class TrainingSet:
    """The pairs a run trains on and the two sets that judge it.

    Args:
        pairs: training pairs (with ``negatives`` when mined or drawn from groups).
        val_set: in-training validation (model selection), never the reported split.
        eval_set: the reported eval set.
        path: ``pairs.jsonl`` in the run directory.
        negatives: counts of mined / group negatives (empty when none).
        diagnostics: length and overlap statistics of the pairs.
        generation: the generator's ``stats`` (offline: pairs per strategy, copy filter, probe).
        mix_choice: how real validation chose between the real pairs alone and the mix
            (:mod:`embedforge.train.mix_choice`), or None when it did not choose.
    """

    pairs: list[Pair]
    val_set: RetrievalSet
    eval_set: RetrievalSet
    path: Path
    negatives: dict[str, Any]
    diagnostics: dict[str, Any]
    generation: dict[str, Any] | None = None
    mix_choice: dict[str, Any] | None = None

    @property
    def by_source(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.pairs:
            counts[p.get("source", "real")] = counts.get(p.get("source", "real"), 0) + 1
        return counts


def build_pairs(cfg: DictConfig, data: DataSource, encoder: Encoder, clock: Clock) -> TrainingSet:
    """Real and generated pairs, mixed, split from validation/eval, capped, given negatives.

    Writes ``pairs.jsonl`` (and ``pair_diagnostics.png``) into the run directory. Under DDP only
    rank 0 builds them (one LLM bill, one cache writer); the other ranks read its file.
    """
    if not launch_rank_zero():
        return rank0_pairs(Path(cfg.paths.output_dir) / PAIRS_FILE)
    run_dir = Path(cfg.paths.output_dir)
    with clock("data"):
        real = data.real_pairs()
    with clock("generate"):
        synthetic, generation = generate_pairs(cfg, data, encoder)
    pairs = mix_pairs(real, synthetic, data.mix_real, data.mix_synthetic, cfg.seed)
    if not pairs and data.generate:
        raise EmbedforgeError(
            f"no training pairs: the generator made none from {data.name!r}'s documents (offline"
            " strategies need informative titles, headings or passages of generator.min_passage_words"
            " words); add real pairs (data.train_queries=true, data.pairs_path=...) or an LLM generator"
        )
    if not pairs:
        raise EmbedforgeError(
            "no training pairs: set data.train_queries=true, data.pairs_path=..., or data.generate=true"
        )
    with clock("validation_set"):
        pairs, val_set, eval_set = build_sets(data, cfg, pairs, encoder)
    if data.max_train_pairs and len(pairs) > data.max_train_pairs:
        pairs = random.Random(cfg.seed).sample(pairs, int(data.max_train_pairs))
    if len(pairs) < 2:
        raise EmbedforgeError(
            f"only {len(pairs)} training pair(s) left: need at least 2 for in-batch negatives"
        )
    negatives: dict[str, Any] = {}
    if int(data.hard_negatives.get("num", 0) or 0) > 0:
        with clock("mine_negatives"):
            pairs = mine_for_pipeline(
                pairs, data, encoder, cfg.seed, stats=negatives, search=search_settings(cfg)
            )
    elif data.group_negatives > 0:
        pairs = data.with_group_negatives(pairs, stats=negatives)
    pairs = equal_negatives(pairs, cfg.seed, stats=negatives)  # one (B, N) shape on every rank
    path = write_jsonl(run_dir / PAIRS_FILE, pairs)
    train_set = TrainingSet(
        pairs, val_set, eval_set, path, negatives, pair_diagnostics(pairs, run_dir), generation
    )
    log.info(
        "training pairs: %d %s | val %s | eval %s",
        len(pairs),
        train_set.by_source,
        val_set.summary(),
        eval_set.summary(),
    )
    return train_set


def rank0_pairs(path: Path, timeout_s: float = 6 * 3600) -> TrainingSet:
    """Rank 0's ``pairs.jsonl`` for a DDP rank > 0 (waiting until it is written; the file is
    written atomically). Evaluation runs on rank 0 only, so its set stays empty here; in-training
    validation gets rank 0's set by broadcast (``ContrastiveModule.validation_step``) and every
    rank encodes a share. ``PairDataModule.setup`` checks that every rank holds the same pairs."""
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise EmbedforgeError(f"rank 0 did not write {path} within {timeout_s:.0f} s")
        time.sleep(1.0)
    pairs = read_jsonl(path)
    none = RetrievalSet({}, {}, {}, name="on rank 0")
    log.info("training pairs: %d read from rank 0's %s", len(pairs), path)
    return TrainingSet(pairs, none, none, path, {}, {})


def generate_pairs(
    cfg: DictConfig, data: DataSource, encoder: Encoder | None = None
) -> tuple[list[Pair], dict[str, Any] | None]:
    """The configured generator's pairs from the source's documents (none unless ``data.generate``)
    and its ``stats``. A generator that scores with the base model (``encoder`` None: the offline
    probe, the LLM round-trip filter) is given the run's instead of loading its own."""
    if not data.generate:
        return [], None
    chunks = data.chunks()
    if not chunks:
        raise EmbedforgeError(f"data source {data.name!r} has no documents to generate pairs from")
    generator = build(cfg.generator)
    if encoder is not None and getattr(generator, "encoder", False) is None:
        generator.encoder = encoder
    pairs = generator.generate(chunks)
    return pairs, dict(getattr(generator, "stats", None) or {}) or None


def mix_pairs(
    real: list[Pair], synthetic: list[Pair], mix_real: int, mix_synthetic: int, seed: int
) -> list[Pair]:
    """Every real pair and up to ``mix_synthetic / mix_real`` generated pairs per real one.

    Real queries pose the task and are scarce: the ratio caps the generated side, never the real
    one (with too few generated pairs the mix is richer in real ones; generate more to reach it).
    ``mix_real=0`` trains on generated pairs only, ``mix_synthetic=0`` on real ones only.
    """
    rng = random.Random(seed)
    if mix_real == 0:
        real = []
    elif mix_synthetic == 0:
        synthetic = []
    elif real and synthetic:
        want_syn = len(real) * mix_synthetic // mix_real
        if want_syn < len(synthetic):
            synthetic = rng.sample(synthetic, want_syn)
        elif want_syn > len(synthetic):
            log.info(
                "mix: %d real pairs want %d generated at %d:%d, %d available (all kept)",
                len(real),
                want_syn,
                mix_real,
                mix_synthetic,
                len(synthetic),
            )
    pairs = real + synthetic
    rng.shuffle(pairs)
    return pairs


def choose_pairs(
    cfg: DictConfig,
    module: ContrastiveModule,
    train_set: TrainingSet,
    data: DataSource,
    trainer: pl.Trainer,
    clock: Clock,
) -> TrainingSet:
    """Real validation's choice between the real pairs alone and the mix (``data.mix_select_steps``,
    :mod:`embedforge.train.mix_choice`); ``pairs.jsonl`` then holds what the run trains on. The
    random state is the same afterwards, so the run trains as if it had been given those pairs.
    ``data.mix_select_check: lexical_margin`` asks the corpus first (offline generated pairs)."""
    check = None
    if cfg.data.get("mix_select_check") == LEXICAL:  # the only check (config.validate)
        check = lambda pairs: mix_check(  # noqa: E731
            pairs, data.chunks, module.encoder, int(cfg.eval.batch_size), int(cfg.seed)
        )
    with clock("mix_choice"), rng_kept():
        pairs, record = choose_mix(
            cfg,
            module,
            train_set.pairs,
            train_set.val_set,
            trainer.world_size,
            lambda: build_module(cfg, module.encoder, train_set.val_set),
            lambda pairs: train_datamodule(cfg, data, module, pairs),
            check,
        )
    if record is None:
        return train_set
    if len(pairs) != len(train_set.pairs):
        write_jsonl(train_set.path, pairs)
        diagnostics = pair_diagnostics(pairs, Path(cfg.paths.output_dir))
    else:
        diagnostics = train_set.diagnostics
    return dataclasses.replace(train_set, pairs=pairs, diagnostics=diagnostics, mix_choice=record)


@contextmanager
def rng_kept() -> Iterator[None]:
    """Python's, NumPy's and torch's random state as they were on entry, on exit."""
    import numpy as np

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def build_sets(
    data: DataSource, cfg: DictConfig, pairs: list[Pair], encoder: Encoder | None = None
) -> tuple[list[Pair], RetrievalSet, RetrievalSet]:
    """Validation and eval sets; held out of the pairs only when the source has no judged split
    (real pairs first; generated ones hardened against ``encoder``: :func:`holdout_sets`)."""
    eval_set, val_set = data.eval_set(), data.val_set()
    if val_set is not None:
        val_set.info.setdefault("kind", DEV_SPLIT)
    if eval_set is None or val_set is None:
        pairs, held_val, held_eval = holdout_sets(
            pairs,
            data.holdout,
            cfg.seed,
            data.val_max_docs,
            data.name,
            with_eval=eval_set is None,
            encoder=encoder if val_set is None else None,
            max_base=data.val_max_base,
            batch_size=cfg.eval.batch_size,
        )
        val_set = val_set or held_val
        eval_set = eval_set or held_eval
    return pairs, val_set, eval_set


# ---------------------------------------------------------------------------------------- model
def build_module(cfg: DictConfig, encoder: Encoder, val_set: RetrievalSet) -> ContrastiveModule:
    """``cfg.module`` (its ``_target_``) around the encoder, loss and optimizer of the config."""
    make = build(
        cfg.module, _partial_=True
    )  # runtime objects are passed as they are, not as config
    return make(
        encoder=encoder,
        loss=build(cfg.loss),
        optimizer=build(cfg.optim),
        val_set=val_set,
        metrics=list(cfg.eval.metrics),
        eval_batch_size=cfg.eval.batch_size,
        empty_queries=cfg.eval.empty_queries,
    )


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """``cfg.trainer`` with the logger (``cfg.logger``) and callbacks (``cfg.callbacks``) it names;
    ``progress: false`` also turns off Lightning's progress bar, and off a terminal the bar is a
    log line per 10 % (:class:`LogLinesProgress`)."""
    quiet_lightning()
    node = cfg.get("logger")
    logger = build(node) if node and "_target_" in node else False
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not logger:  # it has nothing to write to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        raise EmbedforgeError(
            "callbacks.checkpoint is missing: model selection needs the best validation checkpoint"
            " (conf/callbacks/default.yaml)"
        )
    quiet = {} if progress.is_enabled() else {"enable_progress_bar": False}
    if progress.is_enabled() and not sys.stderr.isatty() and cfg.trainer.get("enable_progress_bar"):
        quiet, callbacks = {"enable_progress_bar": False}, [*callbacks, LogLinesProgress()]
    return build(
        cfg.trainer,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=cfg.paths.output_dir,
        **quiet,
    )


# ---------------------------------------------------------------------------------------- fit
@dataclass
class Base:
    """The base model before training: its eval-set result, validation scores and weights."""

    result: EvalResult | None
    val: dict[str, float]
    state: dict[str, torch.Tensor] | None
    dims: dict[str, dict[str, float]] = field(default_factory=dict)  # eval.matryoshka_dims


def evaluate_base(
    cfg: DictConfig,
    module: ContrastiveModule,
    eval_set: RetrievalSet,
    trainer: pl.Trainer,
    clock: Clock,
) -> Base:
    """Score the base model (rank 0 only) and keep its weights when it may be shipped unchanged."""
    encoder = module.encoder
    log.info("baseline: evaluating %s on %s", encoder.name, eval_set.name)
    with clock("baseline_eval"):
        shared = dims_cache(cfg)  # the per-dimension eval reuses the full eval's embeddings
        result = (
            baseline_eval(cfg, encoder, eval_set, shared)
            if cfg.eval.baseline and trainer.is_global_zero
            else None
        )
        dims = evaluate_at_dims(cfg, encoder, eval_set, shared) if result is not None else {}
    with clock("baseline_val"):
        val = module.run_validation() if trainer.is_global_zero else {}
    state = (
        {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        if cfg.eval.keep_best
        else None
    )
    shown = f"{result.metrics.get(SHIP_METRIC, float('nan')):.4f}" if result else "-"
    log.info("baseline: eval %s %s | val %s", SHIP_METRIC, shown, val)
    return Base(result, val, state, dims)


def baseline_eval(
    cfg: DictConfig, encoder: Encoder, eval_set: RetrievalSet, shared: dict | None = None
) -> EvalResult:
    """The base model's metrics, cached by :func:`baseline_key` (``shared``: see :func:`evaluate`).

    Every job of a sweep shares its baseline, so a sweep encodes the eval corpus with the base
    model once instead of once per job.
    """
    key = baseline_key(cfg, encoder, eval_set)
    path = Path(cfg.paths.cache_dir) / "baselines" / f"{key}.json"
    fields = ("metrics", "per_query", "n_queries", "n_skipped", "n_docs")
    if path.is_file():
        d = json.loads(path.read_text())
        log.info("baseline: cached result %s", path)
        return EvalResult(*(d[f] for f in fields), {"cached": 0.0}, d.get("backend", {}))
    r = evaluate(cfg, encoder, eval_set, shared)
    write_json(path, {**{f: getattr(r, f) for f in fields}, "backend": r.backend})
    return r


def baseline_key(cfg: DictConfig, encoder: Encoder, eval_set: RetrievalSet) -> str:
    """Everything a baseline's numbers depend on: the code that scores it (package version, a hash
    of the evaluation and encoder source, library versions), the encoder as it will encode
    (effective prefixes, modules with their pooling, max length, a sha256 of the weights), the
    eval set's content and the metric settings."""
    code = hashlib.sha256()
    for f in sorted(Path(retrieval.__file__).parent.glob("*.py")) + [Path(models_encoder.__file__)]:
        code.update(f.read_bytes())
    return stable_hash(
        embedforge.__version__,
        code.hexdigest(),
        versions(),
        [encoder.query_prefix, encoder.doc_prefix, encoder.max_seq_length, repr(encoder.model)],
        encoder.weights_hash(),
        eval_set.corpus,
        eval_set.queries,
        eval_set.qrels,
        list(cfg.eval.metrics),
        cfg.eval.empty_queries,
        cfg.eval.get("backend", "torch"),
    )


def fit(
    cfg: DictConfig,
    trainer: pl.Trainer,
    module: ContrastiveModule,
    train_set: TrainingSet,
    data: DataSource,
    base: Base,
    clock: Clock,
) -> None:
    """Log the config and the base model's validation, then train: from ``last.ckpt`` when
    resuming, else from the mix choice's winning probe when the run continues it
    (:func:`~embedforge.train.mix_choice.continuation`), else from the base weights."""
    if trainer.logger:
        trainer.logger.log_hyperparams({**flatten(redacted_container(cfg)), **git_info()})
        trainer.logger.log_metrics(base.val, step=0)
    dm = train_datamodule(cfg, data, module, train_set.pairs)
    last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
    probe = continuation(train_set.mix_choice)
    resume_from = str(last) if cfg.get("resume") and last.exists() else probe
    if resume_from and resume_from == probe:
        log.info(
            "training continues from the chosen probe's step %d", train_set.mix_choice["steps_each"]
        )
    with clock("train"):
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    if probe:  # last.ckpt holds everything a resume needs now
        Path(probe).unlink(missing_ok=True)


def train_datamodule(
    cfg: DictConfig, data: DataSource, module: ContrastiveModule, pairs: list[Pair]
) -> PairDataModule:
    """The run's training batches of ``pairs`` (seeded order, length grouping, group-dense
    layout); the mix choice's probes are served by the same."""
    grouping = data.length_grouping
    return PairDataModule(
        pairs,
        data.batch_size,
        cfg.seed,
        data.num_workers,
        has_val=True,
        length_grouping=grouping,
        lengths=token_lengths(pairs, module.encoder.token_counts) if grouping else None,
        groups=data.batch_groups(pairs),
    )


# ---------------------------------------------------------------------------------------- select
@dataclass
class Choice:
    """The shipped model: ``base``, ``best_checkpoint`` or ``last``, by the monitored validation
    value, or ``wise`` (their interpolation with the base weights: ``eval.wise_alphas``, or the
    label-free guard's alpha).

    Args:
        selected: which weights the encoder now holds.
        value: their monitored validation value.
        val: the monitored value of the ``base`` model, ``best`` checkpoint and ``last`` weights.
        wise: the WiSE curve of ``eval.wise_alphas``, or None.
        label_free: the label-free guard's record (:func:`guarded`), or None.
    """

    selected: str
    value: float
    val: dict[str, float | None]
    wise: WiseCurve | None = None
    label_free: dict[str, Any] | None = None


def select(
    cfg: DictConfig,
    module: ContrastiveModule,
    checkpoint: ModelCheckpoint,
    base: Base,
    clock: Clock,
) -> Choice:
    """Load into the encoder whichever of base / best checkpoint / last weights validates best.

    Ties keep the base model; the best checkpoint must beat the last weights by more than the fp32
    noise of its logged score. With ``eval.wise_alphas`` the better of best checkpoint / last is
    interpolated with the base weights (:func:`~embedforge.train.wise.wise_select`) and the alpha
    that validates best is shipped (``selected``: ``base`` at 0, the endpoint at 1, else ``wise``).
    """
    key = cfg.monitor
    with clock("select"):
        last = module.run_validation()
        best = (
            float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
        )
        candidates = {"last": last.get(key, float("-inf"))}
        if best is not None and checkpoint.best_model_path and best > candidates["last"] + 1e-6:
            candidates["best_checkpoint"] = best
        if base.state is not None:
            candidates["base"] = base.val.get(key, float("-inf"))
        alphas = cfg.eval.get("wise_alphas")
        if alphas and base.state is not None:
            return wise_choice(cfg, module, checkpoint, base, candidates, best, last)
        selected = max(candidates, key=lambda k: (candidates[k], k == "base"))
        if selected == "best_checkpoint":
            load_weights(module, checkpoint.best_model_path)
        elif selected == "base":
            module.encoder.load_state_dict(base.state)
    val = {
        "base": base.val.get(key, float("nan")),
        "best": best,
        "last": last.get(key, float("nan")),
    }
    return Choice(selected, candidates[selected], val)


def wise_choice(
    cfg: DictConfig,
    module: ContrastiveModule,
    checkpoint: ModelCheckpoint,
    base: Base,
    candidates: dict[str, float],
    best: float | None,
    last: dict[str, float],
) -> Choice:
    """:func:`select` with ``eval.wise_alphas``: the fine-tuned endpoint (best checkpoint or last,
    as without WiSE) interpolated with the base weights; alpha chosen on validation."""
    endpoint = "best_checkpoint" if "best_checkpoint" in candidates else "last"
    if endpoint == "best_checkpoint":
        load_weights(module, checkpoint.best_model_path)
    curve = wise_select(
        module.encoder,
        base.state,
        [0.0, *cfg.eval.wise_alphas, 1.0],  # the endpoints cost nothing: already scored
        module.run_validation,
        cfg.monitor,
        known={0.0: candidates["base"], 1.0: candidates[endpoint]},
        endpoint=endpoint,
    )
    selected = {0.0: "base", 1.0: endpoint}.get(curve.alpha, "wise")
    log.info("WiSE: alpha %.2f selected (%s %.4f)", curve.alpha, cfg.monitor, curve.value)
    val = {"base": candidates["base"], "best": best, "last": last.get(cfg.monitor, float("nan"))}
    return Choice(selected, curve.value, val, curve)


def label_free_guard(
    cfg: DictConfig,
    data: DataSource,
    train_set: TrainingSet,
    encoder: Encoder,
    trainer: pl.Trainer,
    clock: Clock,
) -> Guard | None:
    """A run validated on generated pairs only (no real queries): the set of
    ``eval.label_free_guard.signal`` from its documents, with the base model's score on it, taken
    before training (rank 0); else None (docs/offline-pairs.md, "Label-free signals")."""
    settings = cfg.eval.get("label_free_guard")
    kind = train_set.val_set.info.get("kind")
    if not settings or not settings.get("signal") or kind != HELD_OUT_SYNTHETIC:
        return None
    if not trainer.is_global_zero:
        return None
    with clock("label_free_guard"):
        guard = build_guard(
            str(settings.signal),
            data.chunks(),
            set((train_set.generation or {}).get("by_strategy") or {}),
            encoder,
            probe_docs=int(settings.probe_docs),
            max_queries=int(settings.max_queries),
            min_delta=float(settings.min_delta),
            alpha=float(settings.get("alpha", 1.0)),
            batch_size=int(cfg.eval.batch_size),
            seed=int(cfg.seed),
        )
    if guard is None:
        log.warning("label-free guard: the documents give no %s query; off", settings.signal)
    elif guard.signal == LEXICAL:
        i = guard.info
        log.info(
            "label-free guard: on %d generated queries of the documents the base model scores"
            " %.4f, BM25 %.4f (margin %+.4f [%+.4f, %+.4f]): %s",
            i["n_queries"],
            i["base"],
            i["bm25"],
            i["margin"],
            i["low"],
            i["high"],
            "BM25 is ahead, fine-tuned weights may ship when validation rises"
            if guard.decided
            else "BM25 is not significantly ahead, so the base model will be shipped (offline pairs"
            " were measured to help only where it is; eval.label_free_guard.signal="
            "generated_validation ships on validation alone)",
        )
    elif guard.rset is not None:
        log.info(
            "label-free guard: %s on %d queries, base %.4f",
            guard.signal,
            len(guard.rset.qrels),
            guard.base,
        )
    return guard


def guarded(
    cfg: DictConfig,
    choice: Choice,
    guard: Guard | None,
    module: ContrastiveModule,
    base: Base,
    clock: Clock,
) -> Choice:
    """With a :class:`Guard` (a label-free run), fine-tuned weights chosen on generated validation
    are shipped only when the guard's signal rose too, and then interpolated with the base weights
    at the guard's ``alpha`` (WiSE-FT; 1 = as trained); else the base model is shipped."""
    if guard is None:
        return choice
    if choice.selected == "base":  # what the guard measured before training is kept
        record = {**guard.describe(), **guard.info, "checked": False, "shipped": "base"}
        return dataclasses.replace(choice, label_free=record)
    with clock("label_free_check"):
        record = guard.check(module.encoder)
    shown = guard.summary(record)
    if base.state is None:  # eval.keep_best=false: the trained weights ship, whatever it says
        log.info("label-free guard: %s (eval.keep_best=false: not acted on)", shown)
        return dataclasses.replace(choice, label_free={**record, "shipped": choice.selected})
    if not record["supports"]:
        module.encoder.load_state_dict(base.state)
        log.warning(
            "label-free guard: %s; the base model is shipped (validation on generated pairs"
            " alone does not predict real retrieval)",
            shown,
        )
        record = {**record, "shipped": "base", "overruled": choice.selected}
        return Choice("base", choice.val["base"], choice.val, choice.wise, label_free=record)
    if guard.alpha >= 1.0 or choice.selected == "wise":  # eval.wise_alphas already chose one
        log.info("label-free guard: %s; %s shipped", shown, choice.selected)
        return dataclasses.replace(choice, label_free={**record, "shipped": choice.selected})
    state = module.encoder.state_dict()
    module.encoder.load_state_dict(interpolate(base.state, state, guard.alpha))
    value = module.run_validation().get(cfg.monitor, float("nan"))
    log.info(
        "label-free guard: %s; %s interpolated with the base weights at alpha %.2f shipped",
        shown,
        choice.selected,
        guard.alpha,
    )
    record = {**record, "shipped": "wise", "alpha": guard.alpha, "interpolated": choice.selected}
    return Choice("wise", value, choice.val, choice.wise, label_free=record)


def load_weights(module: ContrastiveModule, checkpoint_path: str) -> None:
    """The module's weights from a Lightning checkpoint (tensors only; every key must match)."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise EmbedforgeError(
            f"{checkpoint_path} does not fit the module: {first[1].strip() if len(first) > 1 else e}"
        ) from None


# ---------------------------------------------------------------------------------------- report
def evaluate(
    cfg: DictConfig, encoder: Encoder, eval_set: RetrievalSet, shared: dict | None = None
) -> EvalResult:
    """The shipped model on the reported eval set (the same set and metrics as the baseline),
    encoded by ``eval.backend`` (ONNX only after parity on the set's own texts). ``shared``
    (:func:`dims_cache`) keeps the embeddings for :func:`evaluate_at_dims`."""
    used, backend = eval_encoder(encoder, eval_set, cfg.eval.get("backend", "torch"))
    if shared is not None:
        used = TruncatedEncoder(used, None, shared)
    result = retrieval.evaluate(
        used,
        eval_set,
        list(cfg.eval.metrics),
        cfg.eval.batch_size,
        empty_queries=cfg.eval.empty_queries,
        search_settings=search_settings(cfg),
    )
    result.backend = backend
    if result.search.get("method") != "exact":
        result.backend = {**backend, "search": result.search}  # how approximate (recall vs exact)
    return result


def search_settings(cfg: DictConfig) -> SearchSettings | None:
    """``cfg.search``: exact search, or FAISS past ``search.approx_above`` documents."""
    return build(cfg.search) if cfg.get("search") else None


def dims_cache(cfg: DictConfig) -> dict | None:
    """An embedding cache shared by the full and the per-dimension evaluation of one model, when
    ``eval.matryoshka_dims`` asks for the latter (None otherwise: nothing is kept)."""
    return {} if cfg.eval.get("matryoshka_dims") else None


def evaluate_at_dims(
    cfg: DictConfig, encoder: Encoder, eval_set: RetrievalSet, shared: dict | None = None
) -> dict[str, dict[str, float]]:
    """Metrics of the truncated, renormalized embeddings at each ``eval.matryoshka_dims`` (by
    default the matryoshka loss's dims; empty when unset)."""
    dims = cfg.eval.get("matryoshka_dims")
    if not dims:
        return {}
    return evaluate_dims(
        encoder,
        eval_set,
        list(dims),
        list(cfg.eval.metrics),
        cfg.eval.batch_size,
        empty_queries=cfg.eval.empty_queries,
        cache=shared,
    )


def write_run(
    cfg: DictConfig,
    data: DataSource,
    train_set: TrainingSet,
    trainer: pl.Trainer,
    base: Base,
    choice: Choice,
    result: EvalResult,
    clock: Clock,
    dims: dict[str, dict[str, float]] | None = None,
) -> RunMetrics:
    """``model/`` (with its model card), ``per_query.jsonl`` (+ PNG), ``metrics.json`` and
    ``report.md``; final logger metrics. ``dims``: the shipped model's metrics per truncated
    dimension (:func:`evaluate_at_dims`)."""
    run_dir = Path(cfg.paths.output_dir)
    encoder: Encoder = trainer.lightning_module.encoder
    with clock("save"):
        model_dir = encoder.save(run_dir / "model")
    metrics = run_metrics(cfg, data, train_set, trainer, base, choice, result, clock.stop())
    if dims:
        metrics.matryoshka = {"baseline": base.dims, "finetuned": dims}
    if encoder.store is not None:
        metrics.encodes = encoder.store.summary()
    metrics.per_query = write_per_query(run_dir, train_set.eval_set, base.result, result)
    metrics.write(run_dir / "metrics.json")
    write_report(run_dir, metrics)
    if trainer.logger:
        log_final(trainer.logger, metrics, run_dir)
    write_model_card(
        model_dir,
        {
            **base_model_info(str(cfg.model.get("name_or_path", encoder.name))),
            "metrics": metrics,
            "config": OmegaConf.to_yaml(OmegaConf.create(redacted_container(cfg))),
        },
    )
    shown = f"{metrics.finetuned[SHIP_METRIC]:.4f}"
    if metrics.baseline:
        shown = f"{metrics.baseline[SHIP_METRIC]:.4f} -> {shown} ({metrics.ship_gain:+.4f})"
    note = f" ({metrics.eval_note})" if metrics.eval_note else ""
    if metrics.label_free:
        note += f"; model {trust_text(metrics.label_free)}"
    log.info("%s %s%s; report: %s", SHIP_METRIC, shown, note, run_dir / "report.md")
    return metrics


def run_metrics(
    cfg: DictConfig,
    data: DataSource,
    train_set: TrainingSet,
    trainer: pl.Trainer,
    base: Base,
    choice: Choice,
    result: EvalResult,
    seconds: dict[str, float],
) -> RunMetrics:
    """The run's :class:`RunMetrics` (``metrics.json``)."""
    baseline = _rounded(base.result) if base.result else {}
    finetuned = _rounded(result)
    delta = {k: round(finetuned[k] - baseline[k], 6) for k in finetuned if k in baseline}
    base_per_query = base.result.per_query if base.result else {}
    significance = delta_significance(  # paired over the eval queries (per_query.jsonl)
        [{"baseline": base_per_query.get(q), "finetuned": v} for q, v in result.per_query.items()],
        list(finetuned),
        seed=int(cfg.seed),
    )
    generated = train_set.eval_set.info.get("kind") == HELD_OUT_SYNTHETIC
    return RunMetrics(
        task=cfg.task,
        baseline=baseline,
        finetuned=finetuned,
        delta=delta,
        eval_split=train_set.eval_set.info.get("split", "held-out"),
        eval_note=GENERATED_EVAL_NOTE if generated else None,
        n_queries=result.n_queries,
        n_skipped=result.n_skipped,
        empty_queries=cfg.eval.empty_queries,
        n_docs=result.n_docs,
        n_train_pairs=len(train_set.pairs),
        pairs_by_source=train_set.by_source,
        pair_diagnostics=train_set.diagnostics,
        hard_negatives=train_set.negatives or None,
        generation=train_set.generation,
        mix_choice=train_set.mix_choice,
        monitor=cfg.monitor,
        monitor_value=choice.value,
        selected=choice.selected,
        val=choice.val,
        wise=choice.wise.to_dict() if choice.wise else None,
        label_free=choice.label_free,
        ship=ship_record(cfg, delta, significance, result, train_set.eval_set.name, generated),
        eval_set=train_set.eval_set.summary(),
        val_set=train_set.val_set.summary(),
        data=data.summary(),
        training=training_record(cfg, trainer, data, len(train_set.pairs)),
        seconds=seconds,
        eval_backend={
            "baseline": base.result.backend if base.result else {},
            "finetuned": result.backend,
        },
        provenance={
            "seed": cfg.seed,
            "pairs_sha": file_hash(train_set.path),
            "eval_sha": set_hash(train_set.eval_set),
            "val_sha": set_hash(train_set.val_set),
            **git_info(),
            "versions": versions(),
        },
        significance=significance,
    )


def ship_record(
    cfg: DictConfig,
    delta: dict[str, float],
    significance: dict[str, dict[str, Any]],
    result: EvalResult,
    eval_name: str,
    generated: bool,
) -> dict[str, Any]:
    """The ship gate's verdict on ``SHIP_METRIC`` (``metrics.json`` ``ship``), and what it gated on."""
    queries = f"{result.n_queries} {'generated' if generated else 'real'} queries"
    return {
        **verdict(
            delta.get(SHIP_METRIC, 0.0),
            float(cfg.ship.min_gain),
            significance.get(SHIP_METRIC),
            bool(cfg.ship.get("require_significant", False)),
        ),
        "gated_on": f"{SHIP_METRIC} of {queries} ({eval_name})",
    }


def training_record(
    cfg: DictConfig, trainer: pl.Trainer, data: DataSource, n_pairs: int
) -> dict[str, Any]:
    """What was trained, how long and how (``metrics.json`` ``training``)."""
    encoder: Encoder = trainer.lightning_module.encoder
    steps = int(trainer.global_step)
    per_epoch = trainer.num_training_batches  # optimizer steps per pass (one per batch)
    if not isinstance(per_epoch, int) or per_epoch < 1:
        per_epoch = max(1, -(-n_pairs // data.batch_size))
    return {
        "model": encoder.name,
        "loss": cfg.loss._target_.rsplit(".", 1)[-1],
        "batch_size": data.batch_size,
        "steps": steps,
        # passes over the training pairs actually made (max_steps can stop mid-epoch), and
        # how many of them were whole: 0.298 and 0, 2.0 and 2
        "epochs": round(steps / per_epoch, 3),
        "epochs_completed": steps // per_epoch,
        "lr": cfg.optim.get("lr"),
        "precision": str(cfg.trainer.precision),
        "max_seq_length": encoder.max_seq_length,
        # the first batch's activation estimate and whether layers were recomputed in backward
        "activations": getattr(trainer.lightning_module, "activation_plan", None),
        # group-dense batches (data.group_batches): groups per batch, beside shuffled batches
        "batches": getattr(trainer.datamodule, "layout", None),
    }


def _rounded(r: EvalResult) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in r.metrics.items()}


def log_final(logger: Any, m: RunMetrics, run_dir: Path) -> None:
    """Final baseline / fine-tuned metrics (and a table where the logger has one; W&B also gets the
    summary, per-query table, plots and model: :meth:`WandbRunLogger.log_run`); closes the logger."""
    logger.log_metrics(
        {f"final/baseline/{k}": v for k, v in m.baseline.items()}
        | {f"final/finetuned/{k}": v for k, v in m.finetuned.items()}
    )
    if hasattr(logger, "log_table"):
        logger.log_table(
            "final/metrics",
            columns=["metric", "baseline", "finetuned", "delta"],
            data=[[k, m.baseline.get(k), m.finetuned[k], m.delta.get(k)] for k in m.finetuned],
        )
    if isinstance(logger, WandbRunLogger):
        logger.log_run(m, run_dir)
    logger.finalize("success")
