"""Planning the outbox: who may be mailed, which digest rows exist, what was had.

The reads and inserts a send does before it claims anything (``outbox`` then moves
the rows it claimed from state to state). Each is a few bulk statements per batch,
whatever the number of subscribers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from newsletter.db.core import chunks, dialect_insert
from newsletter.db.outbox.transitions import FAILED, PENDING, SENDING, SENT, SKIPPED
from newsletter.db.suppressions import deliverable_clauses
from newsletter.errors import DatabaseError
from newsletter.models import Digest, DigestEntry, Subscriber


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A subscriber who may receive mail, with what due-ness needs (``periods.Schedulable``)."""

    subscriber_id: int
    email: str
    frequency: str
    weekday: int
    send_time: time | None
    timezone: str | None


def _parse_time(value: str | None) -> time | None:
    if not value:
        return None
    try:
        return time.fromisoformat(value)
    except ValueError as e:
        raise DatabaseError(f"subscriber send_time {value!r} is not HH:MM") from e


def schedule_rows(
    session: Session,
    *,
    emails: Sequence[str] | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[ScheduleRow]:
    """Every deliverable subscriber (or those of ``emails``) with their schedule, by id.

    ``after`` and ``limit`` read one page (ids above ``after``, at most ``limit`` of
    them), so that planning a large list never holds every subscriber at once.
    """
    stmt = (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.frequency,
            Subscriber.weekday,
            Subscriber.send_time,
            Subscriber.timezone,
        )
        .where(*deliverable_clauses(), Subscriber.id > after)
        .order_by(Subscriber.id)
        .limit(limit)
    )
    if emails is not None:
        wanted = [e.strip().lower() for e in emails]
        stmt = stmt.where(func.lower(Subscriber.email).in_(wanted))
    return [
        ScheduleRow(r.id, r.email, r.frequency, r.weekday, _parse_time(r.send_time), r.timezone)
        for r in session.execute(stmt)
    ]


def deliverable_ids(session: Session, subscriber_ids: Sequence[int]) -> set[int]:
    """Which of these subscribers may still be mailed (checked again right before sending)."""
    found: set[int] = set()
    for chunk in chunks(list(subscriber_ids)):
        stmt = select(Subscriber.id).where(Subscriber.id.in_(chunk), *deliverable_clauses())
        found.update(session.scalars(stmt))
    return found


def recipients(session: Session, subscriber_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(email, frequency) of each subscriber, in bulk."""
    out: dict[int, tuple[str, str]] = {}
    for chunk in chunks(list(subscriber_ids)):
        rows = session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.frequency).where(
                Subscriber.id.in_(chunk)
            )
        )
        out.update({sid: (email, freq) for sid, email, freq in rows})
    return out


def closed_periods(session: Session, due: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which (subscriber, period) pairs already have a digest that is not pending."""
    by_period: dict[str, list[int]] = defaultdict(list)
    for sid, period in due:
        by_period[period].append(sid)
    closed: set[tuple[int, str]] = set()
    for period, sids in by_period.items():
        for chunk in chunks(sids):
            rows = session.execute(
                select(Digest.subscriber_id).where(
                    Digest.period == period,
                    Digest.subscriber_id.in_(chunk),
                    Digest.status != PENDING,
                )
            )
            closed.update((sid, period) for (sid,) in rows)
    return closed


def ensure_digests(session: Session, due: Sequence[tuple[int, str]], *, now: datetime) -> int:
    """Create a pending digest for each due (subscriber, period) that has none; bulk.

    An older digest of the same subscriber still pending (say, yesterday's, waiting for
    the SMTP server to come back, or settled with ``resend --send-again``) is closed as
    superseded: the new one carries everything not yet sent, so the subscriber gets
    one digest, not two (see :func:`_supersede`).
    """
    created = 0
    # One statement with many parameter sets (compiled once, cached): a multi-row
    # VALUES would be compiled again for every chunk, which costs more than running it.
    stmt = (
        dialect_insert(session, Digest)
        .on_conflict_do_nothing(index_elements=["subscriber_id", "period"])
        .returning(Digest.id)
    )
    conn = session.connection()
    for chunk in chunks(list(due)):
        rows = [
            {
                "subscriber_id": sid,
                "period": period,
                "status": PENDING,
                "n_entries": 0,
                "attempts": 0,
                "created_at": now,
            }
            for sid, period in chunk
        ]
        created += len(conn.execute(stmt, rows).all())
    by_period: dict[str, list[int]] = defaultdict(list)
    for sid, period in due:
        by_period[period].append(sid)
    for period, sids in by_period.items():
        for ids in chunks(sids):
            _supersede(session, ids, period)
    return created


def _supersede(session: Session, subscriber_ids: Sequence[int], period: str) -> None:
    """Close the older pending digests of these subscribers in favour of ``period``'s.

    Whatever an older digest was to carry goes into the new one: the new row's
    ``window_start`` is moved back to the earliest start among them (the claim reads it
    as "starts no later than"), the old rows lose their ``window_end`` so no window is
    taken to start after them, and any entries still recorded for them are freed.
    Entries already in a digest of the subscriber are never composed again, so a
    wider window cannot send anything twice.
    """
    newer = aliased(Digest)
    newer_id = (
        select(newer.id)
        .where(
            newer.subscriber_id == Digest.subscriber_id,
            newer.period == period,
            newer.status == PENDING,  # only a digest still to go can carry them
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(Digest.id, Digest.subscriber_id, Digest.window_start).where(
            Digest.subscriber_id.in_(subscriber_ids),
            Digest.status == PENDING,
            Digest.period != period,
            Digest.id < newer_id,
        )
    ).all()
    if not rows:
        return
    floors: dict[int, datetime] = {}
    for _, sid, start in rows:
        if start is not None and (sid not in floors or start < floors[sid]):
            floors[sid] = start
    old_ids = [r.id for r in rows]
    for chunk in chunks(old_ids):
        session.execute(delete(DigestEntry).where(DigestEntry.digest_id.in_(chunk)))
        session.execute(
            update(Digest)
            .where(Digest.id.in_(chunk), Digest.status == PENDING)
            .values(
                status=SKIPPED,
                error=f"superseded by the digest of {period}, which carries its entries",
                window_end=None,
                claimed_by=None,
                lease_until=None,
                next_attempt_at=None,
            )
        )
    for sid, start in floors.items():
        session.execute(
            update(Digest)
            .where(
                Digest.subscriber_id == sid,
                Digest.period == period,
                Digest.status == PENDING,
                or_(Digest.window_start.is_(None), Digest.window_start > start),
            )
            .values(window_start=start)
        )


# -- what each subscriber has had -------------------------------------------------


def last_windows(session: Session, subscriber_ids: Sequence[int]) -> dict[int, datetime]:
    """Where each subscriber's next digest starts: the end of the last one sent (or skipped).

    A ``sending`` digest counts as sent — its entries may have reached the subscriber —
    and a ``failed`` one does not, so what it held comes again in the next digest.
    """
    out: dict[int, datetime] = {}
    for chunk in chunks(list(subscriber_ids)):
        rows = session.execute(
            select(Digest.subscriber_id, func.max(Digest.window_end))
            .where(
                Digest.subscriber_id.in_(chunk),
                Digest.status.in_((SENT, SENDING, SKIPPED)),
                Digest.window_end.is_not(None),
            )
            .group_by(Digest.subscriber_id)
        )
        out.update({sid: end for sid, end in rows if end is not None})
    return out


def failed_window_starts(session: Session, subscriber_ids: Sequence[int]) -> dict[int, datetime]:
    """Where the earliest failed digest of each subscriber began (its entries are owed)."""
    out: dict[int, datetime] = {}
    for chunk in chunks(list(subscriber_ids)):
        rows = session.execute(
            select(Digest.subscriber_id, func.min(Digest.window_start))
            .where(
                Digest.subscriber_id.in_(chunk),
                Digest.status == FAILED,
                Digest.window_start.is_not(None),
            )
            .group_by(Digest.subscriber_id)
        )
        out.update({sid: start for sid, start in rows if start is not None})
    return out


def first_digest_created(session: Session, subscriber_ids: Sequence[int]) -> dict[int, datetime]:
    """When each subscriber's first digest row was planned, whatever became of it.

    A first digest that never went out (superseded before it was composed) still
    owes what it would have carried: the window of the next one reaches back to it.
    """
    out: dict[int, datetime] = {}
    for chunk in chunks(list(subscriber_ids)):
        rows = session.execute(
            select(Digest.subscriber_id, func.min(Digest.created_at))
            .where(Digest.subscriber_id.in_(chunk))
            .group_by(Digest.subscriber_id)
        )
        out.update({sid: at for sid, at in rows if at is not None})
    return out
