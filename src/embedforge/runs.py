"""Run directories: the schema of ``metrics.json``, loading a run, finding and comparing runs.

A run directory is what ``python train.py`` writes (``.hydra/config.yaml``, ``metrics.json``, ...);
a multirun directory holds one run directory per job (``0/``, ``1/``, ...) and a sweep summary.
A job that raised writes ``failed.json`` instead of ``metrics.json``. :class:`RunMetrics` is the one
schema of ``metrics.json``: the pipeline writes it; the report, model card, ship gate, run tables
and reproduction read it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.eval.ship import SHIP_METRIC, check_quality_gate
from embedforge.eval.significance import interval_text
from embedforge.io import write_json

try:
    import fcntl
except ImportError:  # Windows: no flock, run dirs are not locked
    fcntl = None

if TYPE_CHECKING:
    from embedforge.eval.retrieval import RetrievalSet

#: keys that differ between any two runs but say nothing about the experiment
VOLATILE_KEYS = ("paths.output_dir", "resume")
#: metrics.json fields compared by :func:`diff_metrics` (never wall times or provenance)
COMPARED_FIELDS = (
    "baseline",
    "finetuned",
    "delta",
    "monitor_value",
    "selected",
    "val",
    "n_train_pairs",
    "n_queries",
    "n_docs",
)


@dataclass
class QueryChanges:
    """Per-query evidence (written by :mod:`embedforge.per_query`), part of ``metrics.json``.

    Args:
        metric: the metric the queries are ranked by (the ship metric).
        file: ``per_query.jsonl`` in the run dir (qid, query, baseline and fine-tuned metrics).
        plot: the PNG in the run dir (baseline vs fine-tuned, per-query deltas), or None.
        n_better / n_worse / n_same: queries whose ``metric`` rose, fell, stayed.
        gained / lost: the queries that moved most (qid, query, baseline, finetuned, delta).
    """

    metric: str = SHIP_METRIC
    file: str = "per_query.jsonl"
    plot: str | None = None
    n_better: int = 0
    n_worse: int = 0
    n_same: int = 0
    gained: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunMetrics:
    """``metrics.json``: what a run measured, in the order it is written.

    Args:
        task: the run's task name (``cfg.task``).
        baseline: base-model metrics on the eval set (empty when ``eval.baseline=false``).
        finetuned: metrics of the shipped model on the same eval set.
        delta: ``finetuned - baseline`` per metric.
        eval_split: the reported split (``held-out`` when held out of the pairs).
        eval_note: set when the eval queries were generated from the documents (no labelled
            queries): what the numbers can and cannot say; None for real queries.
        n_queries / n_skipped / n_docs: queries scored (the metrics are their mean), queries without a relevant doc, docs
            searched.
        empty_queries: how queries without a relevant doc counted: ``zero`` (BEIR) or ``skip``
            (left out of the mean; runs written before this field).
        n_train_pairs: training pairs after splitting, capping and negatives.
        pairs_by_source: training pairs per ``source`` (real, offline, synthetic).
        pair_diagnostics: length and overlap statistics of the pairs (``data.diagnostics``).
        hard_negatives: counts of mined or group negatives, or None.
        generation: the generator's stats (offline: pairs per strategy, copy filter, probe table), or None.
        mix_choice: with real and generated pairs and real validation, the probes that chose the
            pairs (``chosen``, ``tried``, ``mixed_minus_real`` with its interval, ``extra_steps``,
            ``continue_from``: the winning probe's checkpoint the run continued from;
            :mod:`embedforge.train.mix_choice`), or None.
        monitor: the validation metric that selects the model (``cfg.monitor``).
        monitor_value: its value for the shipped model.
        selected: ``base``, ``best_checkpoint``, ``last`` or ``wise`` (an interpolation with the base
            weights: ``eval.wise_alphas`` or the label-free guard).
        val: the monitored value of the ``base``, ``best`` checkpoint and ``last`` weights.
        wise: with ``eval.wise_alphas``, the weight-interpolation curve (``alphas``, their ``val``,
            the chosen ``alpha`` and ``value``, the fine-tuned ``endpoint``), else None.
        label_free: a run validated on generated pairs only: the label-free guard's record
            (:meth:`embedforge.generate.label_free.Guard.check`: ``signal``, what it ``measures``, its
            ``base`` / ``finetuned`` / ``delta``, ``supports``, ``trust`` (its measured correlation
            with real test changes), ``shipped``, ``overruled``), or None.
        ship: ``{"min_gain", "passed", "gated_on"}``: the ship gate's verdict and what it compared.
        eval_set / val_set / data: summaries of the eval set, validation set and data source.
        training: model, loss, batch size, steps, epochs, lr, precision, max_seq_length.
        seconds: wall time per stage.
        eval_backend: what encoded the eval set for ``baseline`` and ``finetuned``: ``{"requested",
            "used"}`` and, for onnx, its parity on the eval texts and why it fell back to torch.
        provenance: seed, content hashes of pairs / eval / val sets, git, package versions.
        per_query: the per-query evidence (:class:`QueryChanges`), or None (older runs).
        matryoshka: metrics of truncated, renormalized embeddings per dimension
            (``eval.matryoshka_dims``): ``{"baseline"|"finetuned": {"<dim>": {metric: value}}}``;
            empty when no dimension was evaluated.
        encodes: the embedding store's counts (``embedding_store``): ``{dir, dtype, by_weights:
            {fingerprint: {model, kinds, texts_encoded, cache_hits, repeats}}}``; None without one.
        significance: per metric, the uncertainty of its ``delta`` over the eval queries
            (:func:`embedforge.eval.significance.paired_delta`: ``delta``, 95% ``low``/``high``
            from a paired bootstrap, ``p_value`` of a paired randomization test, ``significant``,
            ``n``, ``std``); empty without a baseline or in runs written before it.
        judged: the person-judged set of ``embedforge judge`` (``judged/``), once scored: ``n_queries``,
            ``n_judgements``, ``baseline``, ``finetuned``, ``delta``, ``significance`` and
            ``queries_needed`` (per metric: queries that would make the observed delta significant);
            None until judged. The ship gate uses it when present.
    """

    task: str = ""
    baseline: dict[str, float] = field(default_factory=dict)
    finetuned: dict[str, float] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    eval_split: str = "held-out"
    eval_note: str | None = None
    n_queries: int = 0
    n_skipped: int = 0
    empty_queries: str = "skip"
    n_docs: int = 0
    n_train_pairs: int = 0
    pairs_by_source: dict[str, int] = field(default_factory=dict)
    pair_diagnostics: dict[str, Any] | None = None
    hard_negatives: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    mix_choice: dict[str, Any] | None = None
    monitor: str = ""
    monitor_value: float | None = None
    selected: str = ""
    val: dict[str, float | None] = field(default_factory=dict)
    wise: dict[str, Any] | None = None
    label_free: dict[str, Any] | None = None
    ship: dict[str, Any] = field(default_factory=dict)
    eval_set: dict[str, Any] = field(default_factory=dict)
    val_set: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    eval_backend: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    per_query: QueryChanges | None = None
    matryoshka: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    encodes: dict[str, Any] | None = None
    significance: dict[str, dict[str, Any]] = field(default_factory=dict)
    judged: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunMetrics:
        """Parse ``metrics.json`` content; keys an older run lacks take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        m = cls(**{k: v for k, v in d.items() if k in names})
        if isinstance(m.per_query, dict):
            m.per_query = QueryChanges(**m.per_query)
        return m

    @classmethod
    def load(cls, path: str | Path) -> RunMetrics:
        """Read ``metrics.json``; a torn or hand-broken file is a one-line error naming it."""
        try:
            return cls.from_dict(read_json_object(path))
        except (TypeError, ValueError) as e:  # fields of the wrong shape
            raise EmbedforgeError(f"{path}: not a metrics.json of embedforge ({e})") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def metric(self, which: str, name: str) -> float:
        """``which`` in baseline | finetuned | delta; NaN when absent."""
        v = getattr(self, which).get(name)
        return float(v) if v is not None else float("nan")

    @property
    def ship_gain(self) -> float:
        """The ``SHIP_METRIC`` delta (0 without a baseline)."""
        return float(self.delta.get(SHIP_METRIC, 0.0))

    def ship_evidence(self) -> dict[str, Any]:
        """What the ship gate judges: the person-judged set when there is one, else the eval set.

        Returns:
            ``{"on": "judged"|"eval", "baseline", "finetuned", "significance"}``.
        """
        if self.judged and self.judged.get("finetuned"):
            j = self.judged
            return {
                "on": "judged",
                "baseline": j.get("baseline") or {},
                "finetuned": j["finetuned"],
                "significance": j.get("significance") or {},
            }
        return {
            "on": "eval",
            "baseline": self.baseline,
            "finetuned": self.finetuned,
            "significance": self.significance,
        }


@dataclass
class RunSummary:
    """One run directory, as the registry sees it.

    Args:
        path: the run directory.
        status: ``ok`` (metrics.json), ``failed`` (failed.json), ``incomplete`` (neither) or
            ``broken`` (one of its files cannot be read: ``error`` names it).
        config: the flattened saved config (dotted keys -> values, interpolations unresolved).
        overrides: the command-line overrides of the run (``.hydra/overrides.yaml``).
        metrics: the parsed ``metrics.json`` (empty unless ``ok``).
        error: the recorded error of a failed run, or what is wrong with a broken one.
    """

    path: Path
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    metrics: RunMetrics = field(default_factory=RunMetrics)
    error: str | None = None

    @property
    def monitor(self) -> str:
        return self.metrics.monitor or str(self.config.get("monitor", f"val/{SHIP_METRIC}"))

    @property
    def monitor_value(self) -> float:
        v = self.metrics.monitor_value
        return float(v) if v is not None else float("nan")

    def metric(self, which: str, name: str) -> float:
        """``which`` in baseline | finetuned | delta; NaN when absent."""
        return self.metrics.metric(which, name)

    @property
    def seconds(self) -> float:
        v = self.metrics.seconds.get("total")
        return float(v) if v is not None else float("nan")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config (lists are leaves; interpolations are kept as strings)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = node
    return out


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file()


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object; anything else is a one-line error naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # torn, hand-broken, not UTF-8
        raise EmbedforgeError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise EmbedforgeError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_yaml(path: str | Path, kind: type = DictConfig) -> Any:
    """A YAML file of a run dir as ``kind`` (a mapping or a list); else a one-line error naming it."""
    try:
        node = OmegaConf.load(path)
    except Exception as e:  # yaml's and OmegaConf's many errors: the first line says what
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EmbedforgeError(f"{path}: unreadable YAML ({first})") from None
    if not isinstance(node, kind):
        want = "a mapping" if kind is DictConfig else "a list"
        raise EmbedforgeError(f"{path}: expected {want}, got {type(node).__name__}")
    return node


def load_config(run_dir: str | Path) -> DictConfig:
    """The saved ``.hydra/config.yaml`` of a run directory (one-line errors)."""
    run = Path(run_dir)
    if not is_run_dir(run):
        raise EmbedforgeError(f"{run} is not a run directory: .hydra/config.yaml is missing")
    return read_yaml(run / ".hydra" / "config.yaml")


def load_run(run_dir: str | Path) -> tuple[DictConfig, RunMetrics | None]:
    """The saved config and ``metrics.json`` of a run directory (None while it has no metrics)."""
    run = Path(run_dir)
    cfg = load_config(run)
    metrics_path = run / "metrics.json"
    metrics = RunMetrics.load(metrics_path) if metrics_path.is_file() else None
    return cfg, metrics


def ship_gate(
    cfg: DictConfig,
    metrics: RunMetrics | None,
    min_gain: float,
    force: bool = False,
    where: str = "run",
    action: str = "export",
) -> dict[str, Any]:
    """The ship gate of a saved run (:func:`~embedforge.eval.ship.check_quality_gate`) on its
    :meth:`RunMetrics.ship_evidence`, with the run's ``ship.min_gain`` (else ``min_gain``) and
    ``ship.require_significant``."""
    ship = cfg.get("ship") if cfg is not None else None
    if ship is not None and "min_gain" in ship:
        min_gain = float(ship.min_gain)
    ev = metrics.ship_evidence() if metrics else {}
    return check_quality_gate(
        ev.get("baseline"),
        ev.get("finetuned"),
        min_gain,
        force,
        where=where,
        action=action,
        significance=(ev.get("significance") or {}).get(SHIP_METRIC),
        require_significant=bool(ship.get("require_significant", False)) if ship else False,
        on=ev.get("on", "eval"),
    )


def run_eval_set(
    cfg: DictConfig, where: str | Path = "the run config", trust: bool = False
) -> RetrievalSet:
    """The reported eval set of a run's config, rebuilt as the run used it (for export, reproduction);
    the config is checked first (:func:`embedforge.config.check_trusted`)."""
    from embedforge.config import build, check_trusted

    if cfg is None or "data" not in cfg:
        raise EmbedforgeError("run config has no `data` node; pass --beir DIR for the eval set")
    check_trusted(cfg, where, trust)
    eval_set = build(cfg.data).eval_set()
    if eval_set is None:
        raise EmbedforgeError(
            "this run evaluated on held-out pairs; its eval set is in <run>/eval_set.json"
        )
    return eval_set


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories under ``paths`` (run dirs, multirun dirs or glob patterns), in order, unique."""
    found: list[Path] = []
    for p in paths:
        matches = sorted(glob.glob(str(p))) if any(c in str(p) for c in "*?[") else [str(p)]
        if not matches:
            raise EmbedforgeError(f"no such run directory: {p}")
        for m in matches:
            root = Path(m)
            if not root.exists():
                raise EmbedforgeError(f"no such run directory: {root}")
            if is_run_dir(root):
                found.append(root)
            else:
                found += sorted(
                    (c.parent.parent for c in root.rglob(".hydra/config.yaml")), key=_natural
                )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise EmbedforgeError(
            f"no run directories (with .hydra/config.yaml) under {', '.join(map(str, paths))}"
        )
    return unique


def _natural(p: Path) -> tuple:
    return tuple(int(s) if s.isdigit() else s for s in p.parts)


def load_summary(run_dir: str | Path) -> RunSummary:
    """Read one run directory (config, overrides, metrics or failure); a damaged file is a
    one-line error naming it."""
    run = Path(run_dir)
    cfg, metrics = load_run(run)
    ov_path = run / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in read_yaml(ov_path, ListConfig)] if ov_path.is_file() else []
    if metrics is not None:
        return RunSummary(run, "ok", flatten(cfg), overrides, metrics)
    if (run / "failed.json").is_file():
        err = read_json_object(run / "failed.json").get("error")
        return RunSummary(run, "failed", flatten(cfg), overrides, error=err)
    return RunSummary(run, "incomplete", flatten(cfg), overrides)


def load_summaries(run_dirs: list[Path]) -> list[RunSummary]:
    """:func:`load_summary` of each run; a run that cannot be read is kept as ``broken``."""
    out = []
    for run in run_dirs:
        try:
            out.append(load_summary(run))
        except EmbedforgeError as e:
            out.append(RunSummary(Path(run), "broken", error=str(e)))
    return out


def differing_keys(runs: list[RunSummary], ignore: tuple[str, ...] = VOLATILE_KEYS) -> list[str]:
    """Config keys whose value is not the same in every run (sorted)."""
    keys = sorted({k for r in runs for k in r.config})
    out = []
    for k in keys:
        if k in ignore:
            continue
        values = [
            json.dumps(r.config[k], sort_keys=True, default=str) if k in r.config else "<absent>"
            for r in runs
        ]
        if len(set(values)) > 1:
            out.append(k)
    # a swapped group (its _target_ differs) is shown by its _target_ alone, not every key under it
    swapped = [k[: -len("._target_")] for k in out if k.endswith("._target_")]
    return [
        k for k in out if k.endswith("._target_") or not any(k.startswith(g + ".") for g in swapped)
    ]


def varying_overrides(runs: list[RunSummary]) -> list[list[str]]:
    """Each run's overrides without those shared by every run (what a sweep varied)."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    return [[o for o in r.overrides if o not in common] for r in runs]


def sort_runs(runs: list[RunSummary], descending: bool = True) -> list[RunSummary]:
    """Best monitored value first (``descending`` for a ``max`` monitor); runs without one last."""

    def key(r: RunSummary) -> tuple[int, float]:
        v = r.monitor_value
        return (1, 0.0) if math.isnan(v) else (0, -v if descending else v)

    return sorted(runs, key=key)


def table_rows(
    runs: list[RunSummary], metric: str = SHIP_METRIC, keys: list[str] | None = None
) -> list[dict[str, Any]]:
    """One flat dict per run: path, status, monitor, baseline/fine-tuned/delta ``metric``, seconds, keys."""
    keys = differing_keys(runs) if keys is None else keys
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "run": str(r.path),
            "status": r.status,
            r.monitor: r.monitor_value,
            f"baseline {metric}": r.metric("baseline", metric),
            f"finetuned {metric}": r.metric("finetuned", metric),
            f"delta {metric}": r.metric("delta", metric),
        }
        if r.metrics.significance.get(metric):  # runs written before intervals have none
            row[f"delta {metric} 95% CI"] = interval_text(r.metrics.significance[metric])
            row[f"delta {metric} p"] = r.metrics.significance[metric]["p_value"]
        row["seconds"] = r.seconds
        for k in keys:
            row[k] = r.config.get(k)
        if r.error:
            row["error"] = r.error
        rows.append(row)
    return rows


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}"
    if v is None:
        return "null"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], short_paths: bool = True) -> str:
    """A Markdown table of :func:`table_rows` (run paths shortened to what tells them apart)."""
    if not rows:
        return "(no runs)\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    names = short_names([r["run"] for r in rows]) if short_paths else [r["run"] for r in rows]
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---:" if isinstance(rows[0].get(c), float) else "---" for c in cols) + "|",
    ]
    for name, r in zip(names, rows):
        cells = []
        for c in cols:
            v = name if c == "run" else r.get(c, "")
            if c == "seconds" and isinstance(v, float) and not math.isnan(v):
                v = f"{v:.1f}"
            elif c.endswith("_target_") and isinstance(v, str):
                v = v.rsplit(".", 1)[-1]  # the class name tells the options apart
            elif isinstance(v, float) and not c.startswith(
                ("val/", "baseline ", "finetuned ", "delta ")
            ):
                v = f"{v:g}"  # a config value, as written
            cells.append(_cell(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def short_names(paths: list[str]) -> list[str]:
    """Paths without their common prefix (``multirun/x/2026-01-01/0`` -> ``0``)."""
    parts = [Path(p).parts for p in paths]
    if len(parts) < 2:
        return [Path(p).name for p in paths]
    n = 0
    while all(len(p) > n + 1 for p in parts) and len({p[n] for p in parts}) == 1:
        n += 1
    return [str(Path(*p[n:])) for p in parts]


# ---------------------------------------------------------------------------------------- reproduction
def diff_metrics(
    old: RunMetrics | dict[str, Any], new: RunMetrics | dict[str, Any], tolerance: float = 1e-6
) -> list[str]:
    """Mismatches between two ``metrics.json`` beyond ``tolerance`` (absolute), one line each.

    Compares the results (baseline, fine-tuned, delta, monitored and validation values, selected model,
    data sizes) and the training-pair hash; never wall times.
    """
    old, new = _as_dict(old), _as_dict(new)
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{key}.{k}")
        elif (
            isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool)
        ):
            if not (
                abs(float(a) - float(b)) <= tolerance
                or (math.isnan(float(a)) and math.isnan(float(b)))
            ):
                out.append(
                    f"{key}: {a} -> {b} (|diff| {abs(float(a) - float(b)):.3g} > {tolerance:g})"
                )
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")

    for k in COMPARED_FIELDS:
        walk(old.get(k), new.get(k), k)
    walk(
        old.get("provenance", {}).get("pairs_sha"),
        new.get("provenance", {}).get("pairs_sha"),
        "provenance.pairs_sha",
    )
    return out


def _as_dict(m: RunMetrics | dict[str, Any]) -> dict[str, Any]:
    return m.to_dict() if isinstance(m, RunMetrics) else m


def provenance_notes(
    old: RunMetrics | dict[str, Any], new: RunMetrics | dict[str, Any]
) -> list[str]:
    """Environment differences (git, versions) that may explain a mismatch; informational."""
    a, b = _as_dict(old).get("provenance", {}), _as_dict(new).get("provenance", {})
    notes = []
    for k in ("git_sha", "git_dirty", "seed"):
        if a.get(k) != b.get(k):
            notes.append(f"provenance.{k}: {a.get(k)!r} -> {b.get(k)!r}")
    va, vb = a.get("versions", {}), b.get("versions", {})
    notes += [
        f"version {k}: {va.get(k)} -> {vb.get(k)}"
        for k in sorted(set(va) | set(vb))
        if va.get(k) != vb.get(k)
    ]
    return notes


# ---------------------------------------------------------------------------------------- sweeps
def record_failure(
    run_dir: str | Path, exc: BaseException, overrides: list[str] | None = None
) -> Path:
    """Write ``failed.json`` (error, type, traceback, overrides) into a job's run directory."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    return write_json(
        run / "failed.json",
        {
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
            "type": type(exc).__name__,
            "overrides": list(overrides or []),
            "traceback": "".join(traceback.format_exception(exc)),
        },
    )


def write_sweep_summary(sweep_dir: str | Path) -> Path | None:
    """``sweep_summary.{md,json}`` in a multirun directory: every job, its overrides, value and status."""
    sweep = Path(sweep_dir)
    try:
        runs = load_summaries(find_runs([sweep]))
    except EmbedforgeError:
        return None
    mode_max = all(str(r.config.get("monitor_mode", "max")) == "max" for r in runs)
    ordered = sort_runs(runs, descending=mode_max)
    rows = table_rows(ordered)
    for row, ov in zip(rows, varying_overrides(ordered)):
        row["overrides"] = " ".join(ov)
    write_json(sweep / "sweep_summary.json", {"monitor": ordered[0].monitor, "jobs": rows})
    n_ok = sum(r.status == "ok" for r in runs)
    head = f"# Sweep {sweep}\n\n{len(runs)} jobs: {n_ok} ok, {len(runs) - n_ok} failed or incomplete. Sorted by {ordered[0].monitor}.\n\n"
    path = sweep / "sweep_summary.md"
    path.write_text(head + markdown_table(rows))
    return path


# ---------------------------------------------------------------------------------------- run lock
#: the lock file a ``train`` holds in its run directory (it contains the owner's pid)
LOCK_FILE = "train.lock"
_held: dict[Path, IO[str]] = {}  # lock files this process holds, by resolved path


class RunDirBusy(EmbedforgeError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``<run_dir>/train.lock`` while the block runs: a second ``train`` into the same
    directory fails at once with a one-line error naming the owner's pid.

    The lock is an advisory ``flock`` on the file, so the kernel drops it when its owner dies:
    the stale lock of a killed run is taken over (the file then gets the new pid). Re-entrant
    within one process (the CLI takes it before Hydra writes ``.hydra/``, then the pipeline again);
    DDP ranks other than 0 share rank 0's directory and take no lock.
    """
    acquired = acquire_run_dir(run_dir)
    try:
        yield
    finally:
        if acquired is not None:
            release_run_dir(acquired)


def acquire_run_dir(run_dir: str | Path) -> Path | None:
    """Take the lock of ``run_dir`` (see :func:`run_dir_lock`); the lock file's path, or None when
    this process already holds it or is a DDP rank above 0 (or on Windows, which has no flock)."""
    if fcntl is None or int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) or 0) != 0:
        return None
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    path = (run / LOCK_FILE).resolve()
    if path in _held:
        return None
    f = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        f.close()
        raise RunDirBusy(
            f"{run} is in use by another train (pid {owner}, lock file {run / LOCK_FILE}):"
            " choose another hydra.run.dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _held[path] = f
    return path


def release_run_dir(path: Path) -> None:
    """Release a lock taken by :func:`acquire_run_dir` (the file stays, with the last owner's pid)."""
    f = _held.pop(path, None)
    if f is not None:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


class RunDirLock(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/train.yaml): a single run locks its run
    directory before Hydra writes ``.hydra/`` into it, so a second run into a busy directory
    refuses (``error:`` line, exit 2) without touching the first one's files."""

    def __init__(self) -> None:
        self._path: Path | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # ``hydra:`` interpolations in run.dir
        try:
            self._path = acquire_run_dir(str(config.hydra.run.dir))
        except EmbedforgeError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._path is not None:
            release_run_dir(self._path)


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/train.yaml): writes the sweep summary at the end."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_sweep_summary(config.hydra.sweep.dir)
        if path is not None:
            print(path.read_text())
