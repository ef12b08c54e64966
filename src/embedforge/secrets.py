"""Secrets come from the environment only and never reach a saved config or log.

Redaction hides the value of a key whose name says it is a secret (``api_key``, ``secret``,
``password``, ``token``, ``authorization`` as words of the name: ``hf_token``, ``client_secret``)
and the credentials inside any URL (``https://user:pass@host`` -> ``https://***@host``), and
nothing else: ``max_output_tokens``, ``chunk_tokens`` or ``tokenizer`` stay visible.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECRET_WORDS = {"secret", "password", "token", "authorization", "apikey"}
_WORD_SPLIT = re.compile(r"[_\-.\s]+")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
MASK = "***"


def is_secret_key(name: Any) -> bool:
    """Whether a config key names a secret (see the module docstring)."""
    words = [w for w in _WORD_SPLIT.split(str(name).lower()) if w]
    joined = {a + b for a, b in zip(words, words[1:])}  # api_key -> "apikey"
    return bool(SECRET_WORDS & (set(words) | joined))


def redact_value(value: Any) -> Any:
    """A string with the credentials of any URL in it masked; other values unchanged."""
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(MASK + "@", value)
    return value


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
