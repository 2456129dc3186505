"""Structured logs: one JSON object per line on stdout, for the service's own loggers and uvicorn's alike."""
from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

# Structured fields travel in `extra={FIELDS: {...}}`, so they never collide with LogRecord's attributes.
FIELDS = "fields"
# The id of the request being served, set by the request-id middleware in the request's own task.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# Which process of a multi-process service wrote a line ("worker-1", "owner-0"); None in a single process.
_process_name: str | None = None


def set_process_name(name: str) -> None:
    """Stamp every line this process logs from now on with `"process": name`."""
    global _process_name
    _process_name = name


class RequestIdFilter(logging.Filter):
    """Stamps every record with the id of the request being served where it was logged (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...fields, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if _process_name is not None:
            entry["process"] = _process_name
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, FIELDS, None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` (and uvicorn `log_config`) sending every logger's records to stdout as JSON,
    each with the request id it was logged under. uvicorn's own access log is replaced by the service's
    (app.http.middleware.telemetry)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"request_id": {"()": RequestIdFilter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
            # It warns about every malformed multipart body, which the service already answers (400) and logs.
            "python_multipart": {"level": "ERROR"},
        },
    }
