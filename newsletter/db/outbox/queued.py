"""The outbox as seen by a queue: which digests a new batch task may name.

Naming a digest in a task does not claim it; the task claims what is still claimable
when it runs (``claim_batch(digest_ids=...)``), so a digest named twice is sent once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from newsletter.db.outbox.transitions import PENDING, SENDING
from newsletter.models import Digest


def claimable_ids(
    session: Session, *, now: datetime, subscriber_ids: Sequence[int] | None = None
) -> list[int]:
    """Pending digests due now that no live lease holds, oldest first."""
    stmt = (
        select(Digest.id)
        .where(
            Digest.status == PENDING,
            or_(Digest.next_attempt_at.is_(None), Digest.next_attempt_at <= now),
            or_(Digest.lease_until.is_(None), Digest.lease_until <= now),
        )
        .order_by(Digest.id)
    )
    if subscriber_ids is not None:
        stmt = stmt.where(Digest.subscriber_id.in_(list(subscriber_ids)))
    return list(session.scalars(stmt))


def leases_by_holder(session: Session, *, now: datetime) -> list[tuple[str, int, int]]:
    """(holder, pending held, sending) for every worker holding a live lease now."""
    rows = session.execute(
        select(Digest.claimed_by, Digest.status, func.count())
        .where(
            Digest.claimed_by.is_not(None),
            Digest.status.in_((PENDING, SENDING)),
            Digest.lease_until > now,
        )
        .group_by(Digest.claimed_by, Digest.status)
    )
    out: dict[str, list[int]] = {}
    for holder, status, n in rows:
        out.setdefault(str(holder), [0, 0])[0 if status == PENDING else 1] += int(n)
    return sorted((h, p, s) for h, (p, s) in out.items())
