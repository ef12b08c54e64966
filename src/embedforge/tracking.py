"""Weights & Biases, done as W&B users expect: one run per job, finished when the job ends.

:class:`WandbRunLogger` is Lightning's ``WandbLogger`` with what a multirun needs: every job gets
its own run (grouped by sweep, ``job_type``, named by its overrides), the mode comes from W&B's own
settings (:func:`wandb_mode`), and :meth:`WandbRunLogger.log_run` puts the run's results where W&B
shows them (summary, per-query table, plots, the model as an artifact). :func:`finishes_wandb`
wraps the job so its run is finished (failed when the job raised) and the next job starts a new one.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pytorch_lightning.loggers import WandbLogger

from embedforge.io import read_jsonl
from embedforge.runs import RunMetrics
from embedforge.secrets import override_secrets, scrub

F = TypeVar("F", bound=Callable[..., Any])


def wandb_mode(mode: str | None = None) -> str:
    """The W&B mode: ``mode`` when given, else W&B's own settings (``WANDB_MODE``, ``wandb
    offline``), else ``online`` when W&B has credentials for its server (``WANDB_API_KEY``, its
    netrc entry for ``WANDB_BASE_URL``'s host, ``wandb login``) and ``offline`` otherwise, so a run
    without a key never blocks on a login prompt."""
    import wandb

    if mode:
        return mode
    configured = wandb.setup().settings.mode
    if configured != "online":
        return configured
    try:  # W&B's own lookup of credentials for its server; no network, no prompt
        found = wandb.login(verify=False, prompt=False)
    except wandb.errors.UsageError:
        found = False
    return "online" if found else "offline"


def _hydra_job() -> tuple[str, str, str] | None:
    """``(sweep name, job number, the job's overrides, secrets masked)`` in a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    name = scrub(hc.job.override_dirname, override_secrets(list(hc.overrides.task)))
    return Path(hc.sweep.dir).name, str(hc.job.num), name


class WandbRunLogger(WandbLogger):
    """Lightning's ``WandbLogger``, one run per job.

    Args:
        project / entity / tags / save_dir: as ``wandb.init``.
        group: the run group; in a multirun ``<group>/<sweep dir name>`` so a sweep's jobs group.
        job_type: ``train`` for a single run, ``sweep-job`` in a multirun, unless given.
        mode: ``online`` / ``offline`` / ``disabled``; None: :func:`wandb_mode` decides.
        log_model: log the shipped ``model/`` dir as a ``model`` artifact (not checkpoints).
        **kwargs: passed on to ``wandb.init``.
    """

    def __init__(
        self,
        project: str = "embedforge",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        save_dir: str = ".",
        mode: str | None = None,
        log_model: bool = False,
        **kwargs: Any,
    ) -> None:
        job = _hydra_job()
        if job is not None:
            sweep, num, overrides = job
            group = f"{group}/{sweep}" if group else sweep
            kwargs.setdefault("name", f"{num}:{overrides}" if overrides else num)
        super().__init__(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type or ("sweep-job" if job else "train"),
            tags=list(tags or []),
            save_dir=save_dir,
            mode=wandb_mode(mode),
            log_model=False,  # Lightning's option uploads checkpoints; we log model/ in log_run
            **kwargs,
        )
        self.log_model_dir = bool(log_model)

    def log_run(self, m: RunMetrics, run_dir: Path) -> None:
        """Final metrics into the run summary, the per-query table, the plots, the model artifact."""
        import wandb

        run = self.experiment
        run.summary.update(
            {f"final/baseline/{k}": v for k, v in m.baseline.items()}
            | {f"final/finetuned/{k}": v for k, v in m.finetuned.items()}
            | {f"final/delta/{k}": v for k, v in m.delta.items()}
            | {f"final/delta_ci_low/{k}": s["low"] for k, s in m.significance.items()}
            | {f"final/delta_ci_high/{k}": s["high"] for k, s in m.significance.items()}
            | {f"final/delta_p/{k}": s["p_value"] for k, s in m.significance.items()}
            | {"final/selected": m.selected, "final/ship_passed": bool(m.ship.get("passed"))}
        )
        media: dict[str, Any] = {}
        if m.per_query is not None and (run_dir / m.per_query.file).is_file():
            media["final/per_query"] = per_query_table(run_dir / m.per_query.file)
        plots = {
            "final/pair_diagnostics": (m.pair_diagnostics or {}).get("plot"),
            "final/per_query_plot": m.per_query.plot if m.per_query else None,
        }
        for key, name in plots.items():
            if name and (run_dir / Path(name).name).is_file():
                media[key] = wandb.Image(str(run_dir / Path(name).name))
        if media:
            run.log(media)
        if self.log_model_dir and (run_dir / "model").is_dir():
            artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=m.finetuned)
            artifact.add_dir(str(run_dir / "model"))
            run.log_artifact(artifact, aliases=["latest", m.selected])


def per_query_table(path: Path):
    """``per_query.jsonl`` as a ``wandb.Table``: qid, query, then baseline / fine-tuned metrics."""
    import wandb

    rows = read_jsonl(path)
    metrics = list(rows[0]["finetuned"]) if rows else []
    columns = ["qid", "query"] + [f"{w}/{k}" for w in ("baseline", "finetuned") for k in metrics]
    data = [
        [r["qid"], r["query"]]
        + [(r["baseline"] or {}).get(k) for k in metrics]
        + [r["finetuned"][k] for k in metrics]
        for r in rows
    ]
    return wandb.Table(columns=columns, data=data)


def finishes_wandb(fn: F) -> F:
    """Finish the W&B run a job started when the job ends: exit code 0 when ``fn`` returns, 1
    (the run shows as failed) when it raises, so the next job of a multirun starts its own run."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            _finish(exit_code=1)
            raise
        _finish(exit_code=0)
        return result

    return wrapper  # type: ignore[return-value]


def _finish(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")  # a job that never used W&B does not import it
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish(exit_code=exit_code)
