"""The server's log: plain text, or one JSON object per line (``--log-format json``).

The per-request line (logger ``embedforge.serve.requests``) carries its fields as ``fields``;
in JSON they become the object's keys.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, then the record's ``fields`` (else its
    message); a traceback, if any, is one ``error`` string, so a line stays a line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        out |= fields if isinstance(fields, dict) else {"message": record.getMessage()}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_config(log_format: str = "text", level: str = "info") -> dict:
    """A ``logging.config.dictConfig`` dict (uvicorn's ``log_config``) for the server's loggers
    and uvicorn's own, in ``log_format``."""
    formatter = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    logger = {"handlers": ["main"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "loggers": {name: logger for name in ("embedforge", "uvicorn", "uvicorn.error")},
    }
