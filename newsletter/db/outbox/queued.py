"""The outbox as seen by a queue: which digests a new batch task may name.

Naming a digest in a task does not claim it; the task claims what is still claimable
when it runs (``claim_batch(digest_ids=...)``), so a digest named twice is sent once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from newsletter.db.outbox.transitions import PENDING
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
