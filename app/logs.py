"""Log formats: JSON lines for collectors, `key=value` text for a terminal.

Every record carries an `action` in its `extra` (the README lists them); both formats show
the extra fields. The configuration is a `logging.config.dictConfig` dict, so uvicorn applies
the same one in every worker process it starts.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import msgspec

# uvicorn attaches `color_message` to its records for its own coloured formatter.
_STANDARD_RECORD_KEYS = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}
_ENCODER = msgspec.json.Encoder(enc_hook=str)  # anything else in `extra` is shown as text


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_KEYS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extra(record),
        }
        if record.exc_info:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info))
        return _ENCODER.encode(line).decode()


class KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`, the extra fields made visible."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extra(record)
        if extra:
            line += " " + " ".join(f"{key}={value}" for key, value in extra.items())
        return line


def dict_config(level: str, log_format: str) -> dict[str, Any]:
    """Root logging to stdout at `level`; `auto` is text on a terminal and JSON elsewhere."""
    if log_format == "auto":
        log_format = "text" if sys.stdout.isatty() else "json"
    formatter = JsonFormatter if log_format == "json" else KeyValueFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"wabahook": {"()": f"{formatter.__module__}.{formatter.__name__}"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "wabahook",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        # uvicorn's own loggers propagate to the root instead of keeping handlers of their own.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
