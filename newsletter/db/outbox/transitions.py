"""The outbox's state machine: each transition one compare-and-set ``UPDATE``.

The states and the rules they keep are in the package docstring
(:mod:`newsletter.db.outbox`); this module is the only one that moves a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from newsletter.db.core import chunks, dialect_insert
from newsletter.db.leases import holder_is_dead
from newsletter.models import Digest, DigestEntry

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"
STATES: tuple[str, ...] = (PENDING, SENDING, SENT, FAILED, SKIPPED)


@dataclass(frozen=True, slots=True)
class Claim:
    """A pending digest this worker holds the lease on."""

    id: int
    subscriber_id: int
    period: str
    attempts: int
    # Where its window starts at the latest: kept from an earlier attempt of this
    # digest, or handed on by the digests it superseded (``plan.ensure_digests``).
    window_start: datetime | None = None

    def starts_by(self, start: datetime) -> datetime:
        """``start``, moved back to where this row says its window begins at the latest.

        A retried digest keeps its first window, and one that superseded others carries
        theirs; entries already in a digest of the subscriber are never composed again,
        so starting earlier never sends anything twice.
        """
        if self.window_start is not None and self.window_start < start:
            return self.window_start
        return start


MarkResult = Literal["ok", "lost", "stale"]


def _dead_holders(session: Session, now: datetime) -> list[str]:
    holders = session.scalars(
        select(Digest.claimed_by)
        .where(Digest.status == PENDING, Digest.lease_until > now, Digest.claimed_by.is_not(None))
        .distinct()
    )
    return [h for h in holders if h is not None and holder_is_dead(h)]


def claim_batch(
    session: Session,
    worker: str,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    subscriber_ids: Sequence[int] | None = None,
    digest_ids: Sequence[int] | None = None,
) -> list[Claim]:
    """Lease up to ``limit`` pending digests that are due, oldest first.

    ``digest_ids`` limits the claim to those rows: a queued batch task names its digests,
    and takes only the ones still claimable (a redelivered task finds none).

    A row is free when unleased, when its lease expired, or when its holder is a dead
    process on this host. Concurrent claimers never get the same row.
    """
    free = or_(Digest.lease_until.is_(None), Digest.lease_until <= now)
    dead = _dead_holders(session, now)
    if dead:
        free = or_(free, Digest.claimed_by.in_(dead))
    stmt = (
        select(Digest.id, Digest.subscriber_id, Digest.period, Digest.attempts, Digest.window_start)
        .where(
            Digest.status == PENDING,
            or_(Digest.next_attempt_at.is_(None), Digest.next_attempt_at <= now),
            free,
        )
        .order_by(Digest.id)
        .limit(limit)
    )
    if subscriber_ids is not None:
        stmt = stmt.where(Digest.subscriber_id.in_(list(subscriber_ids)))
    if digest_ids is not None:
        stmt = stmt.where(Digest.id.in_(list(digest_ids)))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=Digest)
    claims = [
        Claim(r.id, r.subscriber_id, r.period, r.attempts, r.window_start)
        for r in session.execute(stmt)
    ]
    for chunk in chunks([c.id for c in claims]):
        session.execute(
            update(Digest)
            .where(Digest.id.in_(chunk))
            .values(claimed_by=worker, lease_until=now + lease)
        )
    return claims


def renew_claims(session: Session, worker: str, ids: Sequence[int], *, until: datetime) -> int:
    """Extend this worker's leases (pending or sending) on ``ids``; how many it still holds."""
    held = 0
    for chunk in chunks(list(ids)):
        held += len(
            session.execute(
                update(Digest)
                .where(
                    Digest.id.in_(chunk),
                    Digest.claimed_by == worker,
                    Digest.status.in_((PENDING, SENDING)),
                )
                .values(lease_until=until)
                .returning(Digest.id)
            ).all()
        )
    return held


def release_claims(
    session: Session,
    worker: str,
    ids: Sequence[int],
    *,
    next_attempt_at: datetime | None = None,
) -> int:
    """Give back pending digests this worker did not get to (no attempt is charged)."""
    released = 0
    for chunk in chunks(list(ids)):
        values: dict[str, object] = {"claimed_by": None, "lease_until": None}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        released += len(
            session.execute(
                update(Digest)
                .where(Digest.id.in_(chunk), Digest.claimed_by == worker, Digest.status == PENDING)
                .values(**values)
                .returning(Digest.id)
            ).all()
        )
    return released


def mark_sending(
    session: Session,
    digest_id: int,
    worker: str,
    *,
    subscriber_id: int,
    subject: str,
    message_id: str,
    window_start: datetime | None,
    window_end: datetime,
    entries: Sequence[tuple[int, float]],
    lease_until: datetime,
) -> MarkResult:
    """The last step before the message leaves: record it as ``sending`` with its entries.

    ``entries`` are (entry id, score) in rank order. Returns ``"lost"`` when this worker
    no longer holds the pending row, ``"stale"`` when one of the entries is already in
    another digest of the subscriber (composed concurrently): the caller must then roll
    back, not send, and compose again.
    """
    row = session.execute(
        update(Digest)
        .where(Digest.id == digest_id, Digest.status == PENDING, Digest.claimed_by == worker)
        .values(
            status=SENDING,
            subject=subject,
            message_id=message_id,
            n_entries=len(entries),
            window_start=window_start,
            window_end=window_end,
            lease_until=lease_until,
            error=None,
        )
        .returning(Digest.id)
    ).first()
    if row is None:
        return "lost"
    session.execute(delete(DigestEntry).where(DigestEntry.digest_id == digest_id))
    inserted = 0
    ranked = [(eid, score, rank) for rank, (eid, score) in enumerate(entries, start=1)]
    for chunk in chunks(ranked):
        inserted += len(
            session.execute(
                dialect_insert(session, DigestEntry)
                .values(
                    [
                        {
                            "digest_id": digest_id,
                            "subscriber_id": subscriber_id,
                            "entry_id": eid,
                            "score": score,
                            "rank": rank,
                        }
                        for eid, score, rank in chunk
                    ]
                )
                .on_conflict_do_nothing(index_elements=["subscriber_id", "entry_id"])
                .returning(DigestEntry.id)
            ).all()
        )
    return "ok" if inserted == len(ranked) else "stale"


def forget_entries(session: Session, digest_id: int) -> None:
    # The message did not go out: its entries are free for the next digest.
    session.execute(delete(DigestEntry).where(DigestEntry.digest_id == digest_id))


def reschedule(
    session: Session,
    digest_id: int,
    worker: str,
    *,
    error: str,
    next_attempt_at: datetime,
) -> bool:
    """A temporary failure: back to ``pending`` for another try at ``next_attempt_at``."""
    row = session.execute(
        update(Digest)
        .where(
            Digest.id == digest_id,
            Digest.status.in_((PENDING, SENDING)),
            Digest.claimed_by == worker,
        )
        .values(
            status=PENDING,
            attempts=Digest.attempts + 1,
            next_attempt_at=next_attempt_at,
            error=error[:2000],
            claimed_by=None,
            lease_until=None,
        )
        .returning(Digest.id)
    ).first()
    if row is None:
        return False
    forget_entries(session, digest_id)
    return True


def mark_failed(
    session: Session,
    digest_id: int,
    worker: str,
    *,
    error: str,
    window_start: datetime | None = None,
) -> bool:
    """A permanent failure (or attempts used up): ``failed`` with the reason.

    ``window_start`` keeps where its entries began, so a subscriber whose very first
    digest failed still gets those entries in the next one.
    """
    values: dict[str, object] = {
        "status": FAILED,
        "attempts": Digest.attempts + 1,
        "error": error[:2000],
        "lease_until": None,
        "next_attempt_at": None,
    }
    if window_start is not None:
        values["window_start"] = window_start
    row = session.execute(
        update(Digest)
        .where(
            Digest.id == digest_id,
            Digest.status.in_((PENDING, SENDING)),
            Digest.claimed_by == worker,
        )
        .values(**values)
        .returning(Digest.id)
    ).first()
    if row is None:
        return False
    forget_entries(session, digest_id)
    return True


def pending_count(
    session: Session,
    subscriber_ids: Sequence[int] | None = None,
    *,
    due_by: datetime | None = None,
) -> int:
    """Pending digests (of these subscribers; only those claimable by ``due_by``)."""
    stmt = select(func.count()).select_from(Digest).where(Digest.status == PENDING)
    if due_by is not None:
        stmt = stmt.where(or_(Digest.next_attempt_at.is_(None), Digest.next_attempt_at <= due_by))
    if subscriber_ids is not None:
        stmt = stmt.where(Digest.subscriber_id.in_(list(subscriber_ids)))
    return int(session.scalar(stmt) or 0)


def release_worker(session: Session, worker: str) -> int:
    """Give back every pending digest ``worker`` holds (end of a run, or after an error)."""
    return len(
        session.execute(
            update(Digest)
            .where(Digest.claimed_by == worker, Digest.status == PENDING)
            .values(claimed_by=None, lease_until=None)
            .returning(Digest.id)
        ).all()
    )


def next_retry_at(
    session: Session, *, now: datetime, subscriber_ids: Sequence[int] | None = None
) -> datetime | None:
    """When the earliest digest waiting for a retry becomes claimable (None: none waits).

    Rows another worker holds a live lease on are its business, not a reason to wait.
    """
    stmt = select(func.min(Digest.next_attempt_at)).where(
        Digest.status == PENDING,
        Digest.next_attempt_at.is_not(None),
        or_(Digest.lease_until.is_(None), Digest.lease_until <= now),
    )
    if subscriber_ids is not None:
        stmt = stmt.where(Digest.subscriber_id.in_(list(subscriber_ids)))
    return session.scalar(stmt)
