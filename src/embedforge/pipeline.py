"""The whole chain behind ``python train.py``: data -> pairs -> baseline -> fit -> fine-tuned -> report."""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from embedforge.config import build as instantiate
from embedforge.config import validate
from embedforge.data.datamodule import PairDataModule
from embedforge.data.sources import DataSource, holdout_sets
from embedforge.errors import EmbedforgeError
from embedforge.eval.retrieval import EvalResult, RetrievalSet, evaluate
from embedforge.generate.base import Pair
from embedforge.io import atomic_write_text, file_hash, write_json, write_jsonl
from embedforge.module import ContrastiveModule

log = logging.getLogger("embedforge")


# ---------------------------------------------------------------------------------------- pairs
def mix_pairs(
    real: list[Pair], synthetic: list[Pair], mix_real: int, mix_synthetic: int, seed: int
) -> list[Pair]:
    """Real and generated pairs at ``mix_real : mix_synthetic`` (all of the scarcer side is kept)."""
    rng = random.Random(seed)
    if real and synthetic and mix_real and mix_synthetic:
        want_syn = len(real) * mix_synthetic // mix_real
        if want_syn < len(synthetic):
            synthetic = rng.sample(synthetic, want_syn)
        else:
            want_real = max(1, len(synthetic) * mix_real // mix_synthetic)
            real = rng.sample(real, min(len(real), want_real))
    elif mix_real == 0:
        real = []
    elif mix_synthetic == 0:
        synthetic = []
    pairs = real + synthetic
    rng.shuffle(pairs)
    return pairs


def build_sets(
    data: DataSource, cfg: DictConfig, pairs: list[Pair]
) -> tuple[list[Pair], RetrievalSet, RetrievalSet]:
    """Validation and eval sets; held out of the pairs only when the source has no judged split."""
    eval_set, val_set = data.eval_set(), data.val_set()
    if eval_set is None or val_set is None:
        pairs, held_val, held_eval = holdout_sets(
            pairs, data.holdout, cfg.seed, data.val_max_docs, data.name, with_eval=eval_set is None
        )
        val_set = val_set or held_val
        eval_set = eval_set or held_eval
    return pairs, val_set, eval_set


def build_eval_set(cfg: DictConfig) -> RetrievalSet:
    """The reported eval set of a config (as the run used it), for export and reproduction."""
    data: DataSource = instantiate(cfg.data)
    eval_set = data.eval_set()
    if eval_set is None:
        raise EmbedforgeError(
            "this run evaluated on held-out pairs; its eval set is in <run>/eval_set.json"
        )
    return eval_set


def load_run(run_dir: str | Path) -> tuple[DictConfig, dict[str, Any]]:
    """The saved config and metrics of a run directory."""
    run = Path(run_dir)
    cfg_path, metrics_path = run / ".hydra" / "config.yaml", run / "metrics.json"
    if not cfg_path.is_file():
        raise EmbedforgeError(f"{run} is not a run directory: .hydra/config.yaml is missing")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return OmegaConf.load(cfg_path), metrics


def baseline_eval(cfg: DictConfig, encoder, eval_set: RetrievalSet) -> EvalResult:
    """The base model's metrics, cached by (model config, eval set content, metrics).

    Every job of a sweep shares its baseline, so a sweep encodes the eval corpus with the base
    model once instead of once per job.
    """
    from embedforge.io import stable_hash

    metrics = list(cfg.eval.metrics)
    with torch.no_grad():  # the weights themselves, so a changed local model dir is a new key
        weights = [round(float(p.double().sum()), 6) for p in encoder.parameters()]
    key = stable_hash(
        OmegaConf.to_container(cfg.model, resolve=True),
        weights,
        eval_set.corpus,
        eval_set.queries,
        eval_set.qrels,
        metrics,
    )
    path = Path(cfg.paths.cache_dir) / "baselines" / f"{key}.json"
    if path.is_file():
        d = json.loads(path.read_text())
        log.info("baseline: cached result %s", path)
        return EvalResult(
            d["metrics"],
            d["per_query"],
            d["n_queries"],
            d["n_skipped"],
            d["n_docs"],
            {"cached": 0.0},
        )
    r = evaluate(encoder, eval_set, metrics, cfg.eval.batch_size)
    write_json(
        path,
        {
            "metrics": r.metrics,
            "per_query": r.per_query,
            "n_queries": r.n_queries,
            "n_skipped": r.n_skipped,
            "n_docs": r.n_docs,
        },
    )
    return r


# ---------------------------------------------------------------------------------------- logging
def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_logger(cfg: DictConfig):
    node = cfg.get("logger")
    if not node or "_target_" not in node:
        return False
    node = copy.deepcopy(node)
    if "WandbLogger" in str(node._target_):
        offline = node.get("offline", "auto")
        if offline == "auto":
            offline = not wandb_has_key()
        node.offline = bool(offline)
        if offline:
            os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        Path(node.save_dir).mkdir(parents=True, exist_ok=True)
    return instantiate(node)


def git_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
        return {"git_sha": sha or None, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in [
        "embedforge",
        "torch",
        "transformers",
        "sentence-transformers",
        "pytorch-lightning",
        "hydra-core",
    ]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{x:.4f}"


def write_report(run_dir: Path, m: dict[str, Any]) -> Path:
    lines = [f"# embedforge run: {m['task']}", ""]
    lines += [
        f"Eval set **{m['eval_set']['name']}** ({m['n_queries']} queries with relevant documents, {m['n_docs']} documents searched"
        + (
            f", {m['n_skipped']} queries without relevant documents skipped"
            if m.get("n_skipped")
            else ""
        )
        + ").",
        "",
    ]
    lines += ["| metric | baseline | fine-tuned | delta |", "|---|---:|---:|---:|"]
    for k in m["finetuned"]:
        lines.append(
            f"| {k} | {_pct(m['baseline'].get(k, float('nan')))} | {_pct(m['finetuned'][k])} | {m['delta'].get(k, 0):+.4f} |"
        )
    lines += [
        "",
        f"Model shipped as `model/`: **{m['selected']}** (validation {m['monitor']}: base {m['val']['base']:.4f}, "
        f"best checkpoint {m['val']['best'] if m['val']['best'] is not None else float('nan'):.4f}, last {m['val']['last']:.4f}).",
        "",
    ]
    if m["selected"] == "base":
        lines += [
            "**No checkpoint beat the base model on validation; the base model is kept (fine-tuned = baseline).**",
            "",
        ]
    gain = m["delta"].get("ndcg@10", 0.0)
    lines += [
        f"Ship gate: NDCG@10 gain {gain:+.4f} vs required {m['ship']['min_gain']:+.4f}: "
        f"**{'pass' if m['ship']['passed'] else 'FAIL (export will refuse without --force)'}**.",
        "",
    ]
    lines += [
        "## Data",
        "",
        f"- training pairs: {m['n_train_pairs']} ({', '.join(f'{k}: {v}' for k, v in m['pairs_by_source'].items())})",
    ]
    lines += [
        f"- validation: {m['val_set']['name']} ({m['val_set']['n_queries']} queries, {m['val_set']['n_docs']} docs)"
    ]
    for k, v in m["eval_set"].items():
        lines.append(f"- eval {k}: {v}")
    if m.get("hard_negatives"):
        hn = m["hard_negatives"]
        label = (
            "group negatives (same group as the positive)"
            if hn.get("scope") == "group"
            else "hard negatives (mined with the base model)"
        )
        lines.append(f"- {label}: {hn}")
    if m.get("pair_diagnostics"):
        from embedforge.data.diagnostics import diagnostics_markdown

        lines += ["", diagnostics_markdown(m["pair_diagnostics"])]
    lines += ["", "## Training", ""]
    for k, v in m["training"].items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Wall time (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in m["seconds"].items()]
    lines += [
        "",
        f"Reproduce: `python train.py --config-path {run_dir.resolve()}/.hydra --config-name config`",
        "",
    ]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines))


def _set_hash(s: RetrievalSet) -> str:
    """Content hash of an eval/validation set as used (corpus, queries, judgements)."""
    from embedforge.io import stable_hash

    return stable_hash(s.corpus, s.queries, s.qrels)


def _metrics_of(r: EvalResult) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in r.metrics.items()}


# ---------------------------------------------------------------------------------------- train
def train(cfg: DictConfig) -> float:
    """Run the whole chain for one config; returns the monitored validation metric of the shipped model."""
    t0 = time.perf_counter()
    validate(cfg)
    seconds: dict[str, float] = {}
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    # -- data and pairs
    t = time.perf_counter()
    data: DataSource = instantiate(cfg.data)
    real = data.real_pairs()
    seconds["data"] = time.perf_counter() - t
    t = time.perf_counter()
    synthetic: list[Pair] = []
    if data.generate:
        chunks = data.chunks()
        if not chunks:
            raise EmbedforgeError(
                f"data source {data.name!r} has no documents to generate pairs from"
            )
        synthetic = instantiate(cfg.generator).generate(chunks)
    seconds["generate"] = time.perf_counter() - t
    pairs = mix_pairs(real, synthetic, data.mix_real, data.mix_synthetic, cfg.seed)
    if not pairs:
        raise EmbedforgeError(
            "no training pairs: set data.train_queries=true, data.pairs_path=..., or data.generate=true"
        )
    pairs, val_set, eval_set = build_sets(data, cfg, pairs)
    if data.max_train_pairs and len(pairs) > data.max_train_pairs:
        pairs = random.Random(cfg.seed).sample(pairs, int(data.max_train_pairs))
    if len(pairs) < 2:
        raise EmbedforgeError(
            f"only {len(pairs)} training pair(s) left: need at least 2 for in-batch negatives"
        )

    # -- model (hard negatives are mined with the base model)
    t = time.perf_counter()
    encoder = instantiate(cfg.model)
    seconds["load_model"] = time.perf_counter() - t
    mining: dict[str, Any] = {}
    if int(data.hard_negatives.get("num", 0) or 0) > 0:
        from embedforge.data.hard_negatives import mine_for_pipeline

        t = time.perf_counter()
        pairs = mine_for_pipeline(pairs, data, encoder, cfg.seed, stats=mining)
        seconds["mine_negatives"] = time.perf_counter() - t
    elif int(getattr(data, "group_negatives", 0) or 0) > 0:
        pairs = data.with_group_negatives(pairs, stats=mining)
    pairs_file = write_jsonl(run_dir / "train_pairs.jsonl", pairs)
    by_source: dict[str, int] = {}
    for p in pairs:
        by_source[p.get("source", "real")] = by_source.get(p.get("source", "real"), 0) + 1
    from embedforge.data.diagnostics import pair_diagnostics

    diagnostics = pair_diagnostics(pairs, run_dir)
    log.info(
        "training pairs: %d %s | val %s | eval %s",
        len(pairs),
        by_source,
        val_set.summary(),
        eval_set.summary(),
    )
    module = ContrastiveModule(
        encoder=encoder,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optim),
        val_set=val_set,
        metrics=list(cfg.eval.metrics),
        eval_batch_size=cfg.eval.batch_size,
        **{
            k: v
            for k, v in OmegaConf.to_container(cfg.module, resolve=True).items()
            if k != "_target_"
        },
    )

    # -- fit
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    logger = build_logger(cfg)
    ckpt = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="best",
        monitor=cfg.monitor,
        mode=cfg.monitor_mode,
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    from embedforge.resume import ResumableTraining

    callbacks = [ckpt, ResumableTraining(cfg.seed)] + (
        [LearningRateMonitor("step")] if logger else []
    )
    callbacks += [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c
    ]  # e.g. +callbacks.x._target_=...
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir)
    )
    # the baseline is needed on rank 0 only (under DDP every rank runs this function)
    log.info("baseline: evaluating %s on %s", encoder.name, eval_set.name)
    t = time.perf_counter()
    base_eval = (
        baseline_eval(cfg, encoder, eval_set)
        if cfg.eval.baseline and trainer.is_global_zero
        else None
    )
    seconds["baseline_eval"] = time.perf_counter() - t
    t = time.perf_counter()
    base_val = module.run_validation() if trainer.is_global_zero else {}
    seconds["baseline_val"] = time.perf_counter() - t
    base_state = (
        {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        if cfg.eval.keep_best
        else None
    )
    if logger:
        from embedforge.secrets import redacted_container

        logger.log_hyperparams({"config": redacted_container(cfg), **git_info()})
        logger.log_metrics(base_val, step=0)
    dm = PairDataModule(pairs, data.batch_size, cfg.seed, data.num_workers, has_val=True)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last_ckpt) if cfg.get("resume") and last_ckpt.exists() else None
    log.info(
        "baseline %s: eval %s | val %s",
        cfg.monitor.removeprefix("val/"),
        f"{base_eval.metrics.get('ndcg@10', float('nan')):.4f}" if base_eval else "-",
        base_val,
    )
    t = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    seconds["train"] = time.perf_counter() - t
    if not trainer.is_global_zero:
        return float("nan")

    # -- choose the model to ship: base, best checkpoint or last weights, by validation
    t = time.perf_counter()
    last_val = module.run_validation()
    key = cfg.monitor
    candidates = {"last": last_val.get(key, float("-inf"))}
    best_score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    # the checkpoint score was logged in fp32: only a real gain over the last weights counts
    if best_score is not None and ckpt.best_model_path and best_score > candidates["last"] + 1e-6:
        candidates["best_checkpoint"] = best_score
    if base_state is not None:
        candidates["base"] = base_val.get(key, float("-inf"))
    selected = max(
        candidates, key=lambda k: (candidates[k], k == "base")
    )  # ties keep the base model
    if selected == "best_checkpoint":
        state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)[
            "state_dict"
        ]
        module.load_state_dict(state, strict=False)
    elif selected == "base":
        encoder.load_state_dict(base_state)
    seconds["select"] = time.perf_counter() - t
    t = time.perf_counter()
    ft_eval = evaluate(encoder, eval_set, list(cfg.eval.metrics), cfg.eval.batch_size)
    seconds["finetuned_eval"] = time.perf_counter() - t

    # -- write
    t = time.perf_counter()
    model_dir = encoder.save(run_dir / "model")
    seconds["save"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    baseline = _metrics_of(base_eval) if base_eval else {}
    finetuned = _metrics_of(ft_eval)
    delta = {k: round(finetuned[k] - baseline[k], 6) for k in finetuned if k in baseline}
    min_gain = float(cfg.ship.min_gain)
    metrics = {
        "task": cfg.task,
        "baseline": baseline,
        "finetuned": finetuned,
        "delta": delta,
        "eval_split": eval_set.info.get("split", "held-out"),
        "n_queries": ft_eval.n_queries,
        "n_skipped": ft_eval.n_skipped,
        "n_docs": ft_eval.n_docs,
        "n_train_pairs": len(pairs),
        "pairs_by_source": by_source,
        "pair_diagnostics": diagnostics,
        "hard_negatives": mining or None,
        "monitor": key,
        "monitor_value": candidates[selected],
        "selected": selected,
        "val": {
            "base": base_val.get(key, float("nan")),
            "best": best_score,
            "last": last_val.get(key, float("nan")),
        },
        "ship": {"min_gain": min_gain, "passed": delta.get("ndcg@10", 0.0) >= min_gain},
        "eval_set": eval_set.summary(),
        "val_set": val_set.summary(),
        "data": data.summary(),
        "training": {
            "model": encoder.name,
            "loss": cfg.loss._target_.rsplit(".", 1)[-1],
            "batch_size": data.batch_size,
            "steps": int(trainer.global_step),
            "epochs_completed": int(trainer.current_epoch),
            # passes over the training pairs actually made (max_steps can stop mid-epoch)
            "epochs": round(int(trainer.global_step) * data.batch_size / max(1, len(pairs)), 3),
            "lr": cfg.optim.get("lr"),
            "precision": str(cfg.trainer.precision),
            "max_seq_length": encoder.max_seq_length,
        },
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "provenance": {
            "seed": cfg.seed,
            "pairs_sha": file_hash(pairs_file),
            "eval_sha": _set_hash(eval_set),
            "val_sha": _set_hash(val_set),
            **git_info(),
            "versions": versions(),
        },
    }
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir, metrics)
    if logger:
        logger.log_metrics(
            {f"final/baseline/{k}": v for k, v in baseline.items()}
            | {f"final/finetuned/{k}": v for k, v in finetuned.items()}
        )
        if hasattr(logger, "log_table"):
            logger.log_table(
                "final/metrics",
                columns=["metric", "baseline", "finetuned", "delta"],
                data=[[k, baseline.get(k), finetuned[k], delta.get(k)] for k in finetuned],
            )
        logger.finalize("success")
    try:
        from embedforge.export.model_card import write_model_card

        write_model_card(
            model_dir,
            {
                "base_model": cfg.model.get("name_or_path", encoder.name),
                "metrics": metrics,
                "config": OmegaConf.to_yaml(redact(cfg)),
            },
        )
    except ImportError:
        pass
    if baseline:
        log.info(
            "NDCG@10 %.4f -> %.4f (%+.4f); report: %s",
            baseline["ndcg@10"],
            finetuned["ndcg@10"],
            delta["ndcg@10"],
            run_dir / "report.md",
        )
    else:
        log.info(
            "NDCG@10 %.4f (no baseline evaluated); report: %s",
            finetuned["ndcg@10"],
            run_dir / "report.md",
        )
    return float(candidates[selected])


def redact(cfg: DictConfig) -> DictConfig:
    from embedforge.secrets import redacted_container

    return OmegaConf.create(redacted_container(cfg))
