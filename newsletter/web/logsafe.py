"""Log lines the web app writes: no tokens, no forged lines.

URLs carry personal tokens, and a path is chosen by whoever sends the request: a
``%0a`` in it would start a new, forged line in the log. So the app logs the route
pattern and a short token id instead of the path, and every record from its loggers
has its control characters escaped.
"""

from __future__ import annotations

import hashlib
import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control(text: str) -> str:
    """``"a\\nb"`` -> ``"a\\\\x0ab"``: one record stays one line, whatever it quotes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def token_id(token: str) -> str:
    """First 8 hex digits of the token's SHA-256: tells log lines apart, opens nothing."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:8]


class EscapeControlFilter(logging.Filter):
    """Render the message now, with control characters escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape_control(record.getMessage())
        record.args = None
        return True


def guard(logger: logging.Logger) -> logging.Logger:
    """Attach the filter once (records of this logger only, as logging filters go)."""
    if not any(isinstance(f, EscapeControlFilter) for f in logger.filters):
        logger.addFilter(EscapeControlFilter())
    return logger
