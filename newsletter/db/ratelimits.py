"""The ``rate_hits`` table: sliding-window counts shared by every web process.

A hit is counted in one transaction: the rows past the window go, this key's recent
ones are counted, and the hit is added when under the limit. On PostgreSQL a
transaction-scoped advisory lock per key makes the count exact under concurrent
requests; SQLite serialises writers itself, so there two racing requests can at worst
both pass at the limit's edge.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from newsletter.models import RateHit


def take_hit(
    session: Session, scope: str, key: str, *, limit: int, since: datetime, now: datetime
) -> bool:
    """Count one hit for ``(scope, key)``; False (and not counted) when ``limit`` hits
    already fell after ``since``."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"{scope}:{key}"}
        )
    session.execute(delete(RateHit).where(RateHit.at <= since))
    count = session.scalar(
        select(func.count())
        .select_from(RateHit)
        .where(RateHit.scope == scope, RateHit.key == key, RateHit.at > since)
    )
    if (count or 0) >= limit:
        return False
    session.add(RateHit(scope=scope, key=key, at=now))
    return True
