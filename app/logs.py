"""Structured logs: one JSON object per line on stdout, for the service's own loggers and uvicorn's alike."""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# Structured fields travel in `extra={FIELDS: {...}}`, so they never collide with LogRecord's attributes.
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...fields, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` (and uvicorn `log_config`) sending every logger's records to stdout as JSON.
    uvicorn's own access log is replaced by the service's (app.api.telemetry)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
