"""Run ``train`` again from a run directory's saved config: reproduction and resuming."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from embedforge.config import check_trusted
from embedforge.errors import EmbedforgeError
from embedforge.pipeline import train
from embedforge.runs import is_run_dir, load_summary, run_dir_lock
from embedforge.secrets import redact_hydra_dir

#: the callbacks a config saved before ``conf/callbacks/`` existed was trained with (built in code then)
DEFAULT_CALLBACKS = Path(__file__).resolve().parents[2] / "conf" / "callbacks" / "default.yaml"


def rerun(
    run_dir: str | Path,
    out_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    trust: bool = False,
) -> float:
    """Run ``train`` again from a run's saved ``.hydra/config.yaml`` into ``out_dir`` (in-process).

    Equivalent to ``python train.py --config-path RUN/.hydra --config-name config
    hydra.run.dir=OUT [overrides]``: the saved config (not today's ``conf/``) is composed, ``hydra:``
    interpolations resolve against ``out_dir`` and the current directory, and ``out_dir/.hydra``
    records the config and the original overrides plus ``overrides``. Returns the monitored value.
    A config naming targets outside embedforge and the libraries it configures is refused unless
    ``trust`` (:func:`embedforge.config.check_trusted`).
    """
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
        del cfg["hydra"]  # Hydra's own node (from Hydra, not the run dir) builds nothing here
        check_trusted(cfg, run / ".hydra" / "config.yaml", trust)
        _add_default_callbacks(cfg)
        _keep_empty_query_semantics(cfg)
    with run_dir_lock(out):  # before a resume rewrites .hydra/ of a run that is still going
        (out / ".hydra").mkdir(parents=True, exist_ok=True)
        (out / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
        kept = [o for o in old_overrides if not _overridden(o.split("=", 1)[0].lstrip("+~"), keys)]
        merged = kept + list(overrides)
        (out / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(merged)))
        redact_hydra_dir(out / ".hydra")  # secrets among the new overrides
        value = train(cfg)
        (out / "failed.json").unlink(missing_ok=True)  # a resumed failed job is no longer failed
    return value


def _overridden(key: str, keys: set[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def _add_default_callbacks(cfg: DictConfig) -> None:
    """Give a config saved without ``callbacks.checkpoint`` the default callbacks (older runs)."""
    if OmegaConf.select(cfg, "callbacks.checkpoint") is None and DEFAULT_CALLBACKS.is_file():
        cfg.callbacks = OmegaConf.merge(
            OmegaConf.load(DEFAULT_CALLBACKS), cfg.get("callbacks") or {}
        )


def _keep_empty_query_semantics(cfg: DictConfig) -> None:
    """A config saved before ``eval.empty_queries`` existed left such queries out of the mean:
    keep that, so its rerun reproduces its metrics."""
    if OmegaConf.select(cfg, "eval.empty_queries") is None and "eval" in cfg:
        cfg.eval.empty_queries = "skip"
