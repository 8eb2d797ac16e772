"""What the metrics report, read from the tables: the outbox, the feeds, the runs.

Metrics come from the database rather than from counters in one process, so ``/metrics``
on any web worker and the textfile written by ``run`` or ``send`` agree, whichever
process did the work, and survive restarts. Every query is bounded: a scrape every 15 s
must stay cheap on a database of years of digests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from newsletter.db.leases import holder_is_dead
from newsletter.db.outbox.transitions import FAILED, PENDING, SENDING, SENT, STATES
from newsletter.models import Digest, DigestEntry, Entry, Feed

# The per-feed "last send" looks at this many of the newest sent digests, not at all of
# them: a feed absent from those has had nothing in a digest for a good while.
RECENT_SENT_DIGESTS = 10_000
HEALTHY_FEED_STATES = ("ok", "not-modified")


@dataclass(frozen=True, slots=True)
class FeedHealth:
    name: str
    up: bool  # the last fetch worked (or the feed was unchanged)
    consecutive_errors: int
    last_fetch: datetime | None
    last_success: datetime | None
    last_send: datetime | None  # newest sent digest holding one of its entries


@dataclass(frozen=True, slots=True)
class Snapshot:
    digests: dict[str, int]  # rows in each outbox state
    ambiguous: int  # ``sending`` with no live worker: settle with ``newsletter resend``
    retry_waiting: int  # pending again after a temporary failure
    smtp_retries: int  # temporary failures retried, over every digest on record
    last_send: datetime | None
    feeds: tuple[FeedHealth, ...]


def _ambiguous(session: Session, now: datetime) -> int:
    # Rows in ``sending`` are few (at most the messages in flight, plus crash leftovers).
    rows = session.execute(
        select(Digest.claimed_by, Digest.lease_until, func.count())
        .where(Digest.status == SENDING)
        .group_by(Digest.claimed_by, Digest.lease_until)
    )
    return sum(
        int(n)
        for holder, until, n in rows
        if until is None or until <= now or holder_is_dead(holder)
    )


def _retries(session: Session) -> int:
    # ``attempts`` counts deliveries tried; the last one of a sent or failed digest was
    # not followed by a retry, every earlier one was.
    settled = Digest.status.in_((SENT, FAILED))
    retried = case(
        (settled & (Digest.attempts > 0), Digest.attempts - 1),
        (settled, 0),
        else_=Digest.attempts,
    )
    return int(session.scalar(select(func.coalesce(func.sum(retried), 0))) or 0)


def _last_send_by_feed(session: Session) -> dict[int, datetime]:
    recent = (
        select(Digest.id)
        .where(Digest.status == SENT)
        .order_by(Digest.id.desc())
        .limit(RECENT_SENT_DIGESTS)
        .subquery()
    )
    rows = session.execute(
        select(Entry.feed_id, func.max(Digest.sent_at))
        .select_from(recent)
        .join(Digest, Digest.id == recent.c.id)
        .join(DigestEntry, DigestEntry.digest_id == Digest.id)
        .join(Entry, Entry.id == DigestEntry.entry_id)
        .where(Entry.feed_id.is_not(None))
        .group_by(Entry.feed_id)
    )
    # max() keeps the column's type: aware UTC datetimes on every dialect.
    return {int(feed_id): at for feed_id, at in rows if feed_id is not None and at is not None}


def read_snapshot(session: Session, *, now: datetime) -> Snapshot:
    """Everything the metrics show, in a handful of aggregate queries."""
    counts = dict.fromkeys(STATES, 0)
    for status, n in session.execute(select(Digest.status, func.count()).group_by(Digest.status)):
        counts[status] = int(n)
    retry_waiting = int(
        session.scalar(
            select(func.count()).where(
                Digest.status == PENDING, Digest.next_attempt_at.is_not(None)
            )
        )
        or 0
    )
    last_send = session.scalar(select(func.max(Digest.sent_at)).where(Digest.status == SENT))
    by_feed = _last_send_by_feed(session)
    feeds = tuple(
        FeedHealth(
            name=f.name,
            up=f.last_status in HEALTHY_FEED_STATES,
            consecutive_errors=f.consecutive_errors or 0,
            last_fetch=f.last_fetched_at,
            last_success=f.last_success_at,
            last_send=by_feed.get(f.id),
        )
        for f in session.scalars(select(Feed).where(Feed.enabled).order_by(Feed.name))
    )
    return Snapshot(
        digests=counts,
        ambiguous=_ambiguous(session, now),
        retry_waiting=retry_waiting,
        smtp_retries=_retries(session),
        last_send=last_send,
        feeds=feeds,
    )
