"""The outbox seen from the operator's side: what ``status`` and ``resend`` show, and
settling a digest by hand. The state machine itself is in :mod:`newsletter.db.outbox.transitions`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.db.leases import holder_is_dead
from newsletter.db.outbox.transitions import FAILED, PENDING, SENDING, SENT, STATES, forget_entries
from newsletter.errors import DatabaseError
from newsletter.models import Digest, Subscriber


@dataclass(frozen=True, slots=True)
class DigestInfo:
    """A digest row as ``status`` and ``resend`` show it."""

    id: int
    subscriber_id: int
    email: str
    period: str
    status: str
    subject: str | None
    n_entries: int
    attempts: int
    error: str | None
    smtp_reply: str | None
    message_id: str | None
    claimed_by: str | None
    lease_until: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    sent_at: datetime | None
    in_flight: bool = False  # sending, and its worker still holds a live lease


def _info(d: Digest, email: str, now: datetime | None) -> DigestInfo:
    in_flight = (
        d.status == SENDING
        and now is not None
        and d.lease_until is not None
        and d.lease_until > now
        and not holder_is_dead(d.claimed_by)
    )
    return DigestInfo(
        id=d.id,
        subscriber_id=d.subscriber_id,
        email=email,
        period=d.period,
        status=d.status,
        subject=d.subject,
        n_entries=d.n_entries,
        attempts=d.attempts,
        error=d.error,
        smtp_reply=d.smtp_reply,
        message_id=d.message_id,
        claimed_by=d.claimed_by,
        lease_until=d.lease_until,
        next_attempt_at=d.next_attempt_at,
        created_at=d.created_at,
        sent_at=d.sent_at,
        in_flight=in_flight,
    )


def list_digests(
    session: Session,
    *,
    statuses: Iterable[str] | None = None,
    now: datetime | None = None,
    limit: int = 50,
    subscriber_id: int | None = None,
) -> list[DigestInfo]:
    """Digests, newest first, optionally of some states or one subscriber."""
    stmt = (
        select(Digest, Subscriber.email)
        .join(Subscriber, Subscriber.id == Digest.subscriber_id)
        .order_by(Digest.id.desc())
        .limit(limit)
    )
    if statuses is not None:
        stmt = stmt.where(Digest.status.in_(list(statuses)))
    if subscriber_id is not None:
        stmt = stmt.where(Digest.subscriber_id == subscriber_id)
    return [_info(d, email, now) for d, email in session.execute(stmt)]


def get_digest(session: Session, digest_id: int, *, now: datetime | None = None) -> DigestInfo:
    row = session.execute(
        select(Digest, Subscriber.email)
        .join(Subscriber, Subscriber.id == Digest.subscriber_id)
        .where(Digest.id == digest_id)
    ).first()
    if row is None:
        raise DatabaseError(f"no digest with id {digest_id}")
    return _info(row[0], row[1], now)


def ambiguous(session: Session, *, now: datetime) -> list[DigestInfo]:
    """Digests in ``sending``: in flight, or left by a process that died mid-send."""
    return list_digests(session, statuses=[SENDING], now=now, limit=1000)


def counts(session: Session) -> dict[str, int]:
    """Number of digests in each state (every state present, zeros included)."""
    out = dict.fromkeys(STATES, 0)
    for status, n in session.execute(select(Digest.status, func.count()).group_by(Digest.status)):
        out[status] = int(n)
    return out


def retry_backlog(session: Session) -> tuple[int, datetime | None]:
    """Pending digests waiting for a retry, and when the next one is due."""
    n, first = session.execute(
        select(func.count(), func.min(Digest.next_attempt_at)).where(
            Digest.status == PENDING, Digest.next_attempt_at.is_not(None)
        )
    ).one()
    return int(n), first


def settle(
    session: Session,
    digest_id: int,
    action: Literal["mark-sent", "send-again"],
    *,
    now: datetime,
) -> DigestInfo:
    """Resolve a digest by hand (``newsletter resend``).

    ``mark-sent``: the operator checked the mail server's log and it went out.
    ``send-again``: it did not (or it failed and the cause is fixed): back to
    ``pending``, attempts reset, its entries freed so they are composed again.
    A digest that a live worker is sending right now is refused.
    """
    info = get_digest(session, digest_id, now=now)
    if info.in_flight:
        raise DatabaseError(
            f"digest {digest_id} is being sent right now by {info.claimed_by}; "
            f"wait until {info.lease_until:%H:%M:%S} UTC and check again"
        )
    if action == "mark-sent":
        if info.status not in (SENDING, FAILED):
            raise DatabaseError(
                f"digest {digest_id} is {info.status}; only sending or failed digests "
                "can be marked sent"
            )
        values: dict[str, object] = {
            "status": SENT,
            "sent_at": now,
            "lease_until": None,
            "smtp_reply": f"marked sent by the operator (was {info.status})",
        }
    else:
        if info.status not in (SENDING, FAILED):
            raise DatabaseError(
                f"digest {digest_id} is {info.status}; only sending or failed digests "
                "can be sent again"
            )
        values = {
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": None,
            "claimed_by": None,
            "lease_until": None,
            "error": None,
        }
        forget_entries(session, digest_id)
    moved = session.execute(
        update(Digest)
        .where(Digest.id == digest_id, Digest.status == info.status)
        .values(**values)
        .returning(Digest.id)
    ).first()
    if moved is None:
        raise DatabaseError(f"digest {digest_id} changed meanwhile; look again")
    return get_digest(session, digest_id, now=now)


def recent_failures(session: Session, *, limit: int = 10) -> list[DigestInfo]:
    """The latest permanently failed digests with their reasons."""
    return list_digests(session, statuses=[FAILED], limit=limit)
