"""structlog setup: JSON lines when not on a terminal, readable console lines on one.

JSON lines also carry Argo CD's field names, so log queries written for Argo CD carry over:
`msg` (beside structlog's `event`), `time` (beside `timestamp`) and `application` (beside
`app`, the app being reconciled)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def argo_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add Argo CD's names for the message, the time and the application."""
    event["msg"] = event.get("event")
    if "timestamp" in event:
        event["time"] = event["timestamp"]
    if "app" in event:
        event.setdefault("application", event["app"])
    return event


def setup_logging(*, level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog (and stdlib logging) once for the process."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: list[structlog.types.Processor] = (
        [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
        if fmt == "console"
        else [argo_fields, structlog.processors.JSONRenderer()]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
