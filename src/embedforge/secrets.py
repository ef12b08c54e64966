"""Secrets come from the environment only and never reach a saved config or log."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password)", re.I)


def redacted_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, with secret-looking values replaced."""
    container = OmegaConf.to_container(cfg, resolve=False)

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {
                k: ("***" if SECRET_KEY.search(str(k)) and v else walk(v)) for k, v in x.items()
            }
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(container)
