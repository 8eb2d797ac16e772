"""Sliding-window rate limits for the subscribe form, kept in the database.

Counted in ``rate_hits`` (:mod:`newsletter.db.ratelimits`), so every web process
(each gunicorn worker, a restarted ``newsletter serve``) sees the same counts: a limit
is the limit, not N times it. Keys are HMACs of the client or address under the app's
secret, so the table never holds an address in clear. The limits stop a form from
being used to mail-bomb an address, not a determined distributed attack.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from newsletter.db import session_scope
from newsletter.db.ratelimits import take_hit


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RateLimiter:
    """At most ``limit`` hits per key within ``window`` seconds, in one ``scope``."""

    def __init__(
        self,
        engine: Engine,
        scope: str,
        limit: int,
        *,
        secret: bytes,
        window: float = 3600.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine = engine
        self.scope = scope
        self.limit = limit
        self.window = timedelta(seconds=window)
        self._secret = hmac.digest(secret, b"newsletter/rate-limit-key", "sha256")
        self._clock = clock

    def key_of(self, key: str) -> str:
        return hmac.new(self._secret, key.encode("utf-8"), hashlib.sha256).hexdigest()[:64]

    def hit(self, key: str) -> bool:
        """Count one hit for ``key``; False (and not counted) when over the limit."""
        now = self._clock()
        with session_scope(self.engine) as session:
            return take_hit(
                session,
                self.scope,
                self.key_of(key),
                limit=self.limit,
                since=now - self.window,
                now=now,
            )
