"""Candidate entries: what counts as "new" for a subscriber, loaded in bulk.

"New" means first fetched (``Entry.first_seen_at``) since the subscriber's last digest,
not published since: digests such as Daily Papers list older papers when they trend.
A batch of subscribers costs a fixed handful of queries, whatever its size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.db import outbox_plan
from newsletter.db.core import chunks
from newsletter.db.entries import to_article
from newsletter.domain import Article
from newsletter.models import DigestEntry, Entry, Feed
from newsletter.periods import period_length

_TICK = timedelta(microseconds=1)  # the resolution of stored times on both backends


def load_candidates(session: Session, *, since: datetime, until: datetime) -> list[Article]:
    """Entries first fetched after ``since`` and up to ``until``, oldest first."""
    rows = session.execute(
        select(Entry, Feed.name)
        .outerjoin(Feed, Feed.id == Entry.feed_id)
        .where(Entry.first_seen_at > since, Entry.first_seen_at <= until)
        .order_by(Entry.first_seen_at, Entry.id)
    )
    return [to_article(entry, feed_name=name or "") for entry, name in rows]


@dataclass(frozen=True, slots=True)
class CandidateWindow:
    """The entries one subscriber may get next: first fetched in ``(start, end]`` and
    never put in one of their digests before."""

    subscriber_id: int
    start: datetime  # exclusive
    end: datetime  # inclusive
    article_ids: frozenset[int]


def window_start(
    frequency: str,
    *,
    end: datetime,
    last_end: datetime | None,
    owed_from: datetime | None = None,
    since: datetime | None = None,
) -> datetime:
    """Where a window ending at ``end`` starts (exclusive).

    At the end of the last digest that went out (sent, or skipped for want of
    matches); for a first digest one period before ``end``, or back to where a failed
    digest began, whose entries are still owed. ``since`` (inclusive) only widens it.
    """
    start = last_end
    if start is None or start >= end:
        start = end - period_length(frequency)
        if owed_from is not None:
            start = min(start, owed_from)
    if since is not None:
        start = min(start, since - _TICK)
    return start


def window_starts(
    session: Session,
    subscriber_ids: Sequence[int],
    *,
    end: datetime,
    frequency_of: Mapping[int, str],
    since: datetime | None = None,
) -> dict[int, datetime]:
    """:func:`window_start` of each subscriber for windows ending at ``end``, in bulk.

    The one place the rule meets the outbox, so a send and a preview agree on where
    each subscriber's entries begin. Subscribers missing from ``frequency_of`` are
    taken as daily.
    """
    ids = list(dict.fromkeys(subscriber_ids))
    last = outbox_plan.last_windows(session, ids)
    owed = outbox_plan.failed_window_starts(session, ids)
    return {
        sid: window_start(
            frequency_of.get(sid, "daily"),
            end=end,
            last_end=last.get(sid),
            owed_from=owed.get(sid),
            since=since,
        )
        for sid in ids
    }


def candidate_windows(
    session: Session,
    subscriber_ids: Sequence[int],
    *,
    now: datetime,
    frequency_of: Mapping[int, str],
    since: datetime | None = None,
) -> tuple[list[Article], dict[int, CandidateWindow]]:
    """The candidate entries of a batch of subscribers, as of ``now``.

    Returns the union of their entries (match them with one
    :class:`~newsletter.matching.Matcher`) and each subscriber's window, whose
    ``article_ids`` go to ``Matcher.match(candidates=...)``. Subscribers missing from
    ``frequency_of`` are taken as daily.
    """
    ids = list(dict.fromkeys(subscriber_ids))
    if not ids:
        return [], {}
    starts = window_starts(session, ids, end=now, frequency_of=frequency_of, since=since)
    lowest = min(starts.values())
    articles = load_candidates(session, since=lowest, until=now)
    already = _already_sent(session, ids, since=lowest, until=now)
    windows: dict[int, CandidateWindow] = {}
    for sid in ids:
        start, sent = starts[sid], already.get(sid, set())
        allowed = frozenset(a.id for a in articles if a.first_seen > start and a.id not in sent)
        windows[sid] = CandidateWindow(sid, start, now, allowed)
    return articles, windows


def _already_sent(
    session: Session, ids: Sequence[int], *, since: datetime, until: datetime
) -> dict[int, set[int]]:
    """Entries of the window already put in a digest of each subscriber."""
    out: dict[int, set[int]] = defaultdict(set)
    for chunk in chunks(ids):
        rows = session.execute(
            select(DigestEntry.subscriber_id, DigestEntry.entry_id)
            .join(Entry, Entry.id == DigestEntry.entry_id)
            .where(
                DigestEntry.subscriber_id.in_(chunk),
                Entry.first_seen_at > since,
                Entry.first_seen_at <= until,
            )
        )
        for sid, eid in rows:
            out[sid].add(eid)
    return out
