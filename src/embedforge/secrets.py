"""Secrets come from the environment only and never reach a saved config or log.

Redaction hides the value of a key whose name says it is a secret (``api_key``, ``secret``,
``password``, ``token``, ``authorization`` as words of the name: ``hf_token``, ``client_secret``),
the credentials inside any URL (``https://user:pass@host`` -> ``https://***@host``) and the value
of a query parameter so named (``?api_key=***``, also ``?key=``, ``?sig=``), and nothing else: ``max_output_tokens``,
``chunk_tokens`` or ``tokenizer`` stay visible.

A secret passed as an override anyway (``+x.api_key=sk-...``) is masked in every file of the run:
:func:`redact_hydra_dir` rewrites Hydra's ``.hydra/{config,overrides,hydra}.yaml`` when the run
starts, :func:`redact_override` masks the command line W&B records, and the model card, the
logged hyperparameters and W&B's config are written from :func:`redacted_container`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECRET_WORDS = {"secret", "password", "token", "authorization", "apikey"}
_WORD_SPLIT = re.compile(r"[_\-.\s]+")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_QUERY_PARAM = re.compile(r"([?&;])([^=&#;\s\"']+)=([^&#;\s\"']+)")
#: query parameters that carry credentials although their names are not secret words elsewhere
#: (``?key=`` API keys, presigned URLs' ``X-Amz-Signature`` / ``sig``)
QUERY_SECRETS = {"key", "sig", "signature", "x-amz-signature", "x-amz-credential"}
MASK = "***"
#: Hydra's files in a run directory (``hydra.output_subdir``)
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def is_secret_key(name: Any) -> bool:
    """Whether a config key names a secret (see the module docstring)."""
    words = [w for w in _WORD_SPLIT.split(str(name).lower()) if w]
    joined = {a + b for a, b in zip(words, words[1:])}  # api_key -> "apikey"
    return bool(SECRET_WORDS & (set(words) | joined))


def redact_value(value: Any) -> Any:
    """A string with the credentials of any URL in it and its secret-named query parameters
    masked; other values unchanged."""
    if isinstance(value, str):
        value = _URL_CREDENTIALS.sub(MASK + "@", value)
        return _QUERY_PARAM.sub(
            lambda m: f"{m[1]}{m[2]}={MASK}" if _is_secret_param(m[2]) else m[0], value
        )
    return value


def _is_secret_param(name: str) -> bool:
    return is_secret_key(name) or name.lower() in QUERY_SECRETS


def redact_override(override: str) -> str:
    """A Hydra override (or any ``key=value`` argument) with its value masked when the key names a
    secret, else with :func:`redact_value` applied: ``+x.api_key=sk-1`` -> ``+x.api_key=***``."""
    key, sep, value = override.partition("=")
    if sep and value.strip() and is_secret_key(key.lstrip("+~")):
        return f"{key}={MASK}"
    return redact_value(override)


def override_secrets(overrides: list[str]) -> set[str]:
    """The secret values written in ``overrides`` (quotes stripped): what must not appear in any
    file of the run, whatever form it takes there (e.g. Hydra's comma-joined ``override_dirname``)."""
    found: set[str] = set()
    for override in overrides:
        key, sep, value = str(override).partition("=")
        value = value.strip().strip("'\"")
        if sep and value and is_secret_key(key.lstrip("+~")):
            found.add(value)
        found.update(m[0][:-1] for m in _URL_CREDENTIALS.finditer(value))
        found.update(m[3] for m in _QUERY_PARAM.finditer(value) if _is_secret_param(m[2]))
    return {s for s in found if len(s) >= 4}  # shorter: masked where they stand, not everywhere


def redact(x: Any) -> Any:
    """Plain containers with secret-named values and URL credentials masked."""
    if isinstance(x, dict):
        return {k: (MASK if is_secret_key(k) and v else redact(v)) for k, v in x.items()}
    if isinstance(x, list):
        return [redact(v) for v in x]
    return redact_value(x)


def redacted_container(cfg: DictConfig) -> dict[str, Any]:
    """The config (interpolations unresolved) as plain containers, with secrets masked."""
    return redact(OmegaConf.to_container(cfg, resolve=False))


def scrub(x: Any, secrets: set[str], in_list: bool = False) -> Any:
    """:func:`redact` of plain containers, with the strings of lists (override lists) also passed
    through :func:`redact_override`, and every string stripped of the literal ``secrets``."""
    x = redact(x)
    if isinstance(x, dict):
        return {k: scrub(v, secrets) for k, v in x.items()}
    if isinstance(x, list):
        return [scrub(v, secrets, in_list=True) for v in x]
    if isinstance(x, str):
        x = redact_override(x) if in_list else x
        for secret in sorted(secrets, key=len, reverse=True):
            x = x.replace(secret, MASK)
    return x


def redact_hydra_dir(hydra_dir: str | Path) -> None:
    """Rewrite Hydra's files in a run's ``.hydra/`` with secrets masked (see the module docstring).

    Hydra writes the composed config, the overrides and its own config (with the command line)
    before the job starts; this runs first thing in the job. Files are rewritten atomically and
    only when something changes.
    """
    from embedforge.io import atomic_write_text

    folder = Path(hydra_dir)
    loaded = {n: OmegaConf.load(folder / n) for n in HYDRA_FILES if (folder / n).is_file()}
    overrides = list(loaded.get("overrides.yaml") or [])
    hydra = loaded.get("hydra.yaml")
    task = OmegaConf.select(hydra, "hydra.overrides.task", default=None) if hydra else None
    secrets = override_secrets([str(o) for o in overrides + list(task or [])])
    for name, node in loaded.items():
        raw = OmegaConf.to_container(node, resolve=False)
        clean = scrub(raw, secrets)
        if clean != raw:
            atomic_write_text(folder / name, OmegaConf.to_yaml(OmegaConf.create(clean)))
