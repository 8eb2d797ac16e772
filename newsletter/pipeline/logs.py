"""Structured logs: what a line is about (run, feed, digest, subscriber), and JSON lines.

The pipeline binds the ids it is working on with :func:`log_context` (contextvars, so
each thread and each task has its own); :class:`JsonFormatter` adds them to every record,
whichever module logged it. ``--log-format json`` (or ``NEWSLETTER_LOG_FORMAT=json``)
picks it; the human format stays the default.

Addresses are never shown in clear below WARNING: an INFO line is for counting and
correlating (ids do that), a WARNING or ERROR names the recipient because the operator
has to act on it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

FIELDS = ("run_id", "feed", "digest_id", "subscriber_id")
FORMATS = ("text", "json")
FORMAT_ENV = "NEWSLETTER_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "newsletter_log_context", default=None
)
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")

T = TypeVar("T")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` (of :data:`FIELDS`) to every record logged inside, in this context."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, Any]:
    return dict(_context.get() or {})


def bound(fn: Callable[..., T], **fields: Any) -> Callable[..., T]:
    """``fn`` run in a copy of this context, plus ``fields``: pool threads start bare."""
    ctx = contextvars.copy_context()

    def run(*args: Any, **kw: Any) -> T:
        with log_context(**fields):
            return fn(*args, **kw)

    return lambda *args, **kw: ctx.run(run, *args, **kw)


def mask_addresses(text: str) -> str:
    """``ada@example.org`` -> ``a**@example.org`` everywhere in ``text``."""

    def mask(m: re.Match[str]) -> str:
        local, _, domain = m.group().rpartition("@")
        shown = local[:1] if len(local) <= 3 else local[:2]
        return f"{shown}{'*' * max(len(local) - len(shown), 2)}@{domain}"

    return _EMAIL.sub(mask, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the bound ids."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno < logging.WARNING:
            message = mask_addresses(message)
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        bound = _context.get() or {}
        for key in FIELDS:
            value = getattr(record, key, bound.get(key))
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.levelno < logging.WARNING and "exception" in out:
            out["exception"] = mask_addresses(out["exception"])
        if threading.current_thread() is not threading.main_thread():
            out["thread"] = record.threadName
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: int, fmt: str = "text") -> None:
    """The root logger's handler in the chosen format (as ``basicConfig``: only if the
    root has none yet, so a host's own handlers, gunicorn's or pytest's, are kept)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
