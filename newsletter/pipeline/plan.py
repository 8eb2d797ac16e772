"""What a send plans: who is due now, and each claimed digest's window of entries.

Shared by a local send and a queued batch (:mod:`~newsletter.pipeline.batch`), so both
agree on who gets a digest and which entries it may carry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import outbox
from newsletter.db.candidates import window_end, window_starts
from newsletter.db.outbox import plan as outbox_plan
from newsletter.errors import ConfigError, NewsletterError
from newsletter.periods import due_period, period_key
from newsletter.pipeline.jobs import DigestJob

log = logging.getLogger(__name__)


# Subscribers planned per page: the parent of a send holds one page of schedule rows
# at a time, not the whole list (which the composing workers forked later would inherit).
PLAN_PAGE = 5_000


def _due_of(
    rows: Sequence[outbox_plan.ScheduleRow], settings: Settings, now: datetime, *, force: bool
) -> list[tuple[int, str]]:
    nl = settings.newsletter
    due: list[tuple[int, str]] = []
    for r in rows:
        try:
            if force:
                period: str | None = period_key(r, now, nl.timezone)
            else:
                period = due_period(r, now, nl.default_send_time, nl.timezone)
        except ConfigError as e:  # a timezone this machine does not know: skip them
            log.error("subscriber %s: %s; no digest planned", r.email, e)
            continue
        if period is not None:
            due.append((r.subscriber_id, period))
    return due


def due_digests(
    session: Session,
    settings: Settings,
    emails: Sequence[str] | None,
    now: datetime,
    *,
    force: bool,
) -> tuple[list[tuple[int, str]], list[int] | None]:
    """(subscriber id, period) of every subscriber whose digest is due at ``now`` (with
    ``force``, of every current period), and, when ``emails`` names them, their ids."""
    rows = outbox_plan.schedule_rows(session, emails=emails)
    scope: list[int] | None = None
    if emails is not None:
        found = {r.email.lower() for r in rows}
        missing = [e for e in emails if e.strip().lower() not in found]
        if missing:
            raise NewsletterError(
                f"no subscriber {missing[0]} who can be mailed "
                "(unknown, inactive, deleted or unsubscribed; see `newsletter subscribers`)"
            )
        scope = [r.subscriber_id for r in rows]
    return _due_of(rows, settings, now, force=force), scope


def due_pages(
    session: Session,
    settings: Settings,
    now: datetime,
    *,
    force: bool,
    page: int | None = None,
) -> Iterator[list[tuple[int, str]]]:
    """What :func:`due_digests` finds for the whole list, ``page`` (default
    :data:`PLAN_PAGE`) subscribers at a time by id, so that planning holds one page of
    rows whatever the number of subscribers."""
    size = page or PLAN_PAGE
    after = 0
    while True:
        rows = outbox_plan.schedule_rows(session, after=after, limit=size)
        if not rows:
            return
        after = rows[-1].subscriber_id
        yield _due_of(rows, settings, now, force=force)


def digest_jobs(
    session: Session,
    claims: Sequence[outbox.Claim],
    now: datetime,
    who: dict[int, tuple[str, str]],
) -> list[DigestJob]:
    """Each claim's window; ``who``: ``outbox_plan.recipients`` of the claims.

    Windows end at :func:`~newsletter.db.candidates.window_end` (``now``, or just
    before a fetch still storing began), and never before they start.
    """
    ids = [c.subscriber_id for c in claims]
    frequency = {sid: freq for sid, (_, freq) in who.items()}
    starts = window_starts(session, ids, end=now, frequency_of=frequency)
    end = window_end(session, now=now)
    jobs = []
    for c in claims:
        start = c.starts_by(starts[c.subscriber_id])
        jobs.append(DigestJob(c.subscriber_id, c.period, start, max(end, start), digest_id=c.id))
    return jobs
