"""Logging set-up: plain text, or one JSON object per line (``VELOCITY_LOG_FORMAT=json``).

``bind(render_id=..., account=...)`` attaches fields to every record logged in its block
(on this thread or task: a ``ContextVar``), so a log line about a render carries the render
id and the account without every call site repeating them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_fields: ContextVar[dict[str, str] | None] = ContextVar("velocity_log_fields", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add ``fields`` (e.g. ``render_id``, ``account``) to the records logged inside."""
    current = dict(_fields.get() or {})
    current.update({k: str(v) for k, v in fields.items() if v is not None})
    token = _fields.set(current)
    try:
        yield
    finally:
        _fields.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (``record.velocity``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.velocity = dict(_fields.get() or {})
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", <bound fields>, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(getattr(record, "velocity", None) or {})
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


def setup_logging(level: int, fmt: str = "text") -> None:
    """Configure the root logger once for a process (``fmt``: ``text`` or ``json``)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


__all__ = ["ContextFilter", "JsonFormatter", "bind", "setup_logging"]
