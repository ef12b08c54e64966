"""Run registry: find run directories, summarise them, diff their configs and metrics.

A run directory is what ``python train.py`` writes (``.hydra/config.yaml``, ``metrics.json``, ...);
a multirun directory holds one run directory per job (``0/``, ``1/``, ...) and a sweep summary.
A job that raised writes ``failed.json`` instead of ``metrics.json``.
"""

from __future__ import annotations

import glob
import json
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.io import write_json

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
class RunSummary:
    """One run directory, as the registry sees it.

    Args:
        path: the run directory.
        status: ``ok`` (metrics.json), ``failed`` (failed.json) or ``incomplete`` (neither).
        config: the flattened saved config (dotted keys -> values, interpolations unresolved).
        overrides: the command-line overrides of the run (``.hydra/overrides.yaml``).
        metrics: the parsed ``metrics.json`` (empty unless ``ok``).
        error: the recorded error of a failed run.
    """

    path: Path
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def monitor(self) -> str:
        return self.metrics.get("monitor") or str(self.config.get("monitor", "val/ndcg@10"))

    @property
    def monitor_value(self) -> float:
        v = self.metrics.get("monitor_value")
        return float(v) if v is not None else float("nan")

    def metric(self, which: str, name: str) -> float:
        """``which`` in baseline | finetuned | delta; NaN when absent."""
        v = self.metrics.get(which, {}).get(name)
        return float(v) if v is not None else float("nan")

    @property
    def seconds(self) -> float:
        v = self.metrics.get("seconds", {}).get("total")
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
    """Read one run directory (config, overrides, metrics or failure)."""
    run = Path(run_dir)
    if not is_run_dir(run):
        raise EmbedforgeError(f"{run} is not a run directory: .hydra/config.yaml is missing")
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    ov_path = run / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(ov_path)] if ov_path.is_file() else []
    if (run / "metrics.json").is_file():
        return RunSummary(
            run, "ok", flatten(cfg), overrides, json.loads((run / "metrics.json").read_text())
        )
    if (run / "failed.json").is_file():
        err = json.loads((run / "failed.json").read_text()).get("error")
        return RunSummary(run, "failed", flatten(cfg), overrides, error=err)
    return RunSummary(run, "incomplete", flatten(cfg), overrides)


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
    runs: list[RunSummary], metric: str = "ndcg@10", keys: list[str] | None = None
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
            "seconds": r.seconds,
        }
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
def diff_metrics(old: dict[str, Any], new: dict[str, Any], tolerance: float = 1e-6) -> list[str]:
    """Mismatches between two ``metrics.json`` beyond ``tolerance`` (absolute), one line each.

    Compares the results (baseline, fine-tuned, delta, monitored and validation values, selected model,
    data sizes) and the training-pair hash; never wall times.
    """
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


def rerun(
    run_dir: str | Path, out_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> float:
    """Run ``train`` again from a run's saved ``.hydra/config.yaml`` into ``out_dir`` (in-process).

    Equivalent to ``python train.py --config-path RUN/.hydra --config-name config
    hydra.run.dir=OUT [overrides]``: the saved config (not today's ``conf/``) is composed, ``hydra:``
    interpolations resolve against ``out_dir`` and the current directory, and ``out_dir/.hydra``
    records the config and the original overrides plus ``overrides``. Returns the monitored value.
    """
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    run, out = Path(run_dir).resolve(), Path(out_dir).resolve()
    if not is_run_dir(run):
        raise EmbedforgeError(f"{run} is not a run directory: .hydra/config.yaml is missing")
    old_overrides = load_summary(run).overrides
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(run / ".hydra"), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    except Exception as e:  # hydra's override/compose errors name the bad key
        raise EmbedforgeError(
            f"cannot compose {run}/.hydra/config.yaml with {list(overrides)}: {e}"
        ) from None
    finally:
        GlobalHydra.instance().clear()
    cfg.hydra.runtime.output_dir = str(out)
    cfg.hydra.runtime.cwd = os.getcwd()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    (out / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    kept = [o for o in old_overrides if not _overridden(o.split("=", 1)[0].lstrip("+~"), keys)]
    merged = kept + list(overrides)
    (out / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(merged)))
    from embedforge.pipeline import train

    value = train(cfg)
    (out / "failed.json").unlink(missing_ok=True)  # a resumed failed job is no longer failed
    return value


def _overridden(key: str, keys: set[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def provenance_notes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Environment differences (git, versions) that may explain a mismatch; informational."""
    a, b = old.get("provenance", {}), new.get("provenance", {})
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
        runs = [load_summary(p) for p in find_runs([sweep])]
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


try:  # the Hydra callback; hydra is a dependency, but keep the registry importable without it
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class SweepSummary(_HydraCallback):
    """Hydra callback (``hydra.callbacks`` in conf/train.yaml): writes the sweep summary at the end."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_sweep_summary(config.hydra.sweep.dir)
        if path is not None:
            print(path.read_text())
