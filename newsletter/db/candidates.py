"""Candidate entries: what counts as "new" for a subscriber, loaded in bulk.

"New" means first fetched (``Entry.first_seen_at``) since the subscriber's last digest,
not published since: digests such as Daily Papers list older papers when they trend.
Trending picks look a little further: upvotes arrive over the days after a paper is
listed, so a paper whose Daily Papers listing day is at most ``trending_days`` UTC days
before the window's end stays a trending candidate until it is sent to the subscriber
(keyword picks keep the window). A batch of subscribers costs a fixed handful of
queries, whatever its size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from newsletter.db.core import chunks
from newsletter.db.entries import EntryColumns, to_article
from newsletter.db.outbox import plan as outbox_plan
from newsletter.db.runs import fetch_fence
from newsletter.domain import Article
from newsletter.models import DigestEntry, Entry, Feed
from newsletter.periods import period_length

_TICK = timedelta(microseconds=1)  # the resolution of stored times on both backends


# What ``to_article`` reads of an entry, selected as plain columns: every batch of a
# send loads its candidates again, and ORM instances cost several times more.
_ARTICLE_COLUMNS = (
    Entry.id,
    Entry.title,
    Entry.summary,
    Entry.link,
    Entry.authors,
    Entry.categories,
    Entry.extra,
    Entry.upvotes,
    Entry.published_at,
    Entry.first_seen_at,
)


def load_candidates(
    session: Session, *, since: datetime, until: datetime, cache: ArticleCache | None = None
) -> list[Article]:
    """Entries first fetched after ``since`` and up to ``until``, oldest first (through
    ``cache``, when given, decoding only new or changed rows)."""
    return _load(session, since=since, until=until, listed_since=None, cache=cache)[0]


def trending_floor(end: datetime, days: int) -> datetime:
    """Midnight UTC of the oldest listing day whose papers are still trending candidates
    for a window ending at ``end``: ``days`` days before ``end``'s UTC day."""
    day = end.astimezone(UTC).date() - timedelta(days=days)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _in_pool(
    since: datetime, until: datetime, listed_since: datetime | None
) -> ColumnElement[bool]:
    """First fetched in ``(since, until]``, or (already fetched) listed since ``listed_since``."""
    window = (Entry.first_seen_at > since) & (Entry.first_seen_at <= until)
    if listed_since is None:
        return window
    listed = (Entry.listed_at >= listed_since) & (Entry.first_seen_at <= until)
    return or_(window, listed)


class ArticleCache:
    """Articles one process decoded before, reused while their rows are unchanged.

    Every batch of a send loads the same pool of entries again, in every composing
    process, and decoding the rows (JSON columns, times) is most of that. With a cache
    a load reads only each row's id, ``updated_at``, listing day and feed name, and
    decodes just the rows that are new or changed: entries are only ever updated with
    a new ``updated_at`` (:mod:`newsletter.db.entries`). Keep one per process.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._known: dict[int, tuple[tuple[datetime, str], Article]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def load(
        self, session: Session, pool: ColumnElement[bool], listed_since: datetime | None
    ) -> tuple[list[Article], frozenset[int]]:
        """The entries of ``pool`` (oldest first) and those listed since ``listed_since``."""
        rows = session.execute(
            select(Entry.id, Entry.updated_at, Entry.listed_at, Feed.name)
            .outerjoin(Feed, Feed.id == Entry.feed_id)
            .where(pool)
            .order_by(Entry.first_seen_at, Entry.id)
        ).all()
        known = self._known
        stale = [
            eid
            for eid, updated, _, feed in rows
            if (got := known.get(eid)) is None or got[0] != (updated, feed or "")
        ]
        if len(known) + len(stale) > self.limit:
            known.clear()
            stale = [eid for eid, *_ in rows]
        for chunk in chunks(stale):
            fresh = session.execute(
                select(*_ARTICLE_COLUMNS, Entry.updated_at, Feed.name.label("feed_name"))
                .outerjoin(Feed, Feed.id == Entry.feed_id)
                .where(Entry.id.in_(chunk))
            )
            for row in fresh:
                feed = row.feed_name or ""
                article = to_article(cast(EntryColumns, row), feed_name=feed)
                known[row.id] = ((row.updated_at, feed), article)
        articles = [known[eid][1] for eid, *_ in rows]
        listed = frozenset(
            eid
            for eid, _, at, _ in rows
            if listed_since is not None and at is not None and at >= listed_since
        )
        return articles, listed


def _load(
    session: Session,
    *,
    since: datetime,
    until: datetime,
    listed_since: datetime | None,
    cache: ArticleCache | None = None,
) -> tuple[list[Article], frozenset[int]]:
    """:func:`load_candidates`, plus the entries listed since ``listed_since`` (their ids
    apart: they are trending candidates only, unless first fetched in the window too)."""
    if cache is not None:
        return cache.load(session, _in_pool(since, until, listed_since), listed_since)
    rows = session.execute(
        select(*_ARTICLE_COLUMNS, Entry.listed_at, Feed.name.label("feed_name"))
        .outerjoin(Feed, Feed.id == Entry.feed_id)
        .where(_in_pool(since, until, listed_since))
        .order_by(Entry.first_seen_at, Entry.id)
    )
    articles: list[Article] = []
    listed: set[int] = set()
    for row in rows:
        # A row has the attributes of the columns: all ``to_article`` reads of an Entry.
        articles.append(to_article(cast(EntryColumns, row), feed_name=row.feed_name or ""))
        if listed_since is not None and row.listed_at is not None and row.listed_at >= listed_since:
            listed.add(row.id)
    return articles, frozenset(listed)


@dataclass(frozen=True, slots=True)
class CandidateWindow:
    """The entries one subscriber may get next: first fetched in ``(start, end]`` and
    never put in one of their digests before (``article_ids``, for keyword picks); and
    for trending picks those plus the never-sent papers listed in the last
    ``trending_days`` (``trending_ids``)."""

    subscriber_id: int
    start: datetime  # exclusive
    end: datetime  # inclusive
    article_ids: frozenset[int]
    listed_ids: frozenset[int]  # never sent, listed in the last trending_days
    trending_ids: frozenset[int]  # article_ids | listed_ids

    @classmethod
    def of(
        cls,
        subscriber_id: int,
        start: datetime,
        end: datetime,
        article_ids: frozenset[int],
        listed_ids: frozenset[int] = frozenset(),
    ) -> CandidateWindow:
        """A window with its trending candidates made (the same set when none is listed)."""
        trending = article_ids | listed_ids if listed_ids else article_ids
        return cls(subscriber_id, start, end, article_ids, listed_ids, trending)

    @property
    def opens_at(self) -> datetime:
        """The first instant inside the window: what to show (``--since 2020-01-01``
        opens at 2020-01-01 00:00, not at the exclusive 2019-12-31 23:59:59.999999)."""
        return self.start + _TICK


def window_start(
    frequency: str,
    *,
    end: datetime,
    last_end: datetime | None,
    owed_from: datetime | None = None,
    since: datetime | None = None,
    first_planned: datetime | None = None,
) -> datetime:
    """Where a window ending at ``end`` starts (exclusive).

    At the end of the last digest that went out (sent, or skipped for want of
    matches); for a first digest one period before ``end`` — or before the first
    digest planned for the subscriber, if that one never went out — or back to where
    a failed digest began, whose entries are still owed. ``since`` (inclusive) only
    widens it.
    """
    start = last_end
    if start is None or start >= end:
        start = end - period_length(frequency)
        if first_planned is not None:
            start = min(start, first_planned - period_length(frequency))
        if owed_from is not None:
            start = min(start, owed_from)
    if since is not None:
        start = min(start, since - _TICK)
    return start


def window_end(session: Session, *, now: datetime) -> datetime:
    """Where a window composed at ``now`` may end: ``now``, or just before the start of
    a fetch still storing entries (:func:`newsletter.db.runs.fetch_fence`), whose
    entries are stamped before they are committed; the next window takes them."""
    fence = fetch_fence(session, now=now)
    return now if fence is None else min(now, fence - _TICK)


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
    fresh = [sid for sid in ids if sid not in last or last[sid] >= end]
    owed = outbox_plan.failed_window_starts(session, fresh) if fresh else {}
    planned = outbox_plan.first_digest_created(session, fresh) if fresh else {}
    return {
        sid: window_start(
            frequency_of.get(sid, "daily"),
            end=end,
            last_end=last.get(sid),
            owed_from=owed.get(sid),
            since=since,
            first_planned=planned.get(sid),
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
    trending_days: int | None = None,
    cache: ArticleCache | None = None,
) -> tuple[list[Article], dict[int, CandidateWindow]]:
    """The candidate entries of a batch of subscribers, as of ``now``.

    Returns the union of their entries (match them with one
    :class:`~newsletter.matching.matcher.Matcher`) and each subscriber's window, whose
    ``article_ids`` go to ``Matcher.match(candidates=...)`` and ``trending_ids`` to
    ``Matcher.trending``. ``trending_days`` (``newsletter.trending_days``; None when
    nobody in the batch wants trending picks) keeps recently listed papers trending
    candidates. Subscribers missing from ``frequency_of`` are taken as daily.
    ``cache`` (a process's :class:`ArticleCache`) saves decoding unchanged entries again.
    """
    ids = list(dict.fromkeys(subscriber_ids))
    if not ids:
        return [], {}
    starts = window_starts(session, ids, end=now, frequency_of=frequency_of, since=since)
    lowest = min(starts.values())
    floor = trending_floor(now, trending_days) if trending_days is not None else None
    articles, listed = _load(session, since=lowest, until=now, listed_since=floor, cache=cache)
    already = _already_sent(session, ids, since=lowest, until=now, listed_since=floor)
    windows: dict[int, CandidateWindow] = {}
    # Most subscribers of a batch share their window: one frozenset for all of them
    # (built once, and the matcher recognises it instead of reading it again).
    shared: dict[tuple[datetime, frozenset[int]], CandidateWindow] = {}
    for sid in ids:
        start, sent = starts[sid], frozenset(already.get(sid, ()))
        window = shared.get((start, sent))
        if window is None:
            allowed = frozenset(a.id for a in articles if a.first_seen > start and a.id not in sent)
            window = shared[start, sent] = CandidateWindow.of(
                sid, start, now, allowed, listed - sent if listed else frozenset()
            )
        windows[sid] = window if window.subscriber_id == sid else replace(window, subscriber_id=sid)
    return articles, windows


def _already_sent(
    session: Session,
    ids: Sequence[int],
    *,
    since: datetime,
    until: datetime,
    listed_since: datetime | None = None,
) -> dict[int, set[int]]:
    """Entries of the window (and the recently listed ones) already put in a digest of
    each subscriber."""
    out: dict[int, set[int]] = defaultdict(set)
    for chunk in chunks(ids):
        rows = session.execute(
            select(DigestEntry.subscriber_id, DigestEntry.entry_id)
            .join(Entry, Entry.id == DigestEntry.entry_id)
            .where(
                DigestEntry.subscriber_id.in_(chunk),
                _in_pool(since, until, listed_since),
            )
        )
        for sid, eid in rows:
            out[sid].add(eid)
    return out
