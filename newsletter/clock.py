"""The one place the product asks what time it is.

``NEWSLETTER_NOW`` (an ISO 8601 instant with a zone, e.g. ``2026-03-02T07:00:00+00:00``)
moves the clock for simulations: the process starts at that instant and time then runs
at its normal pace from there, so waits and leases behave as they would on that day.
It is meant for soak tests and rehearsals, never for production: ``status`` and the
logs say so loudly whenever it is set. Durations (timeouts, deadlines) use
``time.monotonic`` and are not affected.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from newsletter.errors import ConfigError

ENV = "NEWSLETTER_NOW"

_override: tuple[str, datetime, float] | None = None  # (raw value, start, monotonic at start)


def _parse(raw: str) -> datetime:
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(
            f"{ENV}={raw!r} is not an ISO 8601 instant (e.g. 2026-03-02T07:00:00+00:00)"
        ) from e
    if moment.tzinfo is None:
        raise ConfigError(f"{ENV}={raw!r} has no timezone: add +00:00 or Z")
    return moment.astimezone(UTC)


def simulated() -> str | None:
    """The ``NEWSLETTER_NOW`` value in force, or None on the real clock."""
    raw = os.environ.get(ENV)
    return raw if raw else None


def now() -> datetime:
    """The current instant, aware, in UTC (moved by ``NEWSLETTER_NOW`` when set)."""
    global _override
    raw = os.environ.get(ENV)
    if not raw:
        return datetime.now(UTC)
    if _override is None or _override[0] != raw:
        _override = (raw, _parse(raw), time.monotonic())
    _, start, t0 = _override
    return start + timedelta(seconds=time.monotonic() - t0)


def check() -> None:
    """Raise :class:`ConfigError` now if ``NEWSLETTER_NOW`` is set but unreadable."""
    raw = simulated()
    if raw is not None:
        _parse(raw)
