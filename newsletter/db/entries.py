"""Queries for feeds, entries and fetch runs.

Storing is done per batch (one feed's entries): existing sources and dedupe keys are
loaded with one query each, new rows are inserted in bulk and changed rows updated in
bulk, so a fetch costs a handful of statements however many entries a feed carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import delete, distinct, func, insert, select, update
from sqlalchemy.orm import Session

from newsletter.config import FeedSettings
from newsletter.db.core import chunks
from newsletter.domain import Article, ParsedEntry
from newsletter.models import Entry, EntrySource, Feed, FeedDay

FeedStatus = Literal["ok", "warning", "not-modified", "error", "gone"]
Validators = tuple[str | None, str | None]  # (ETag, Last-Modified)

# -- feeds ---------------------------------------------------------------------------


def sync_feeds(session: Session, feeds: Sequence[FeedSettings]) -> dict[str, Feed]:
    """Make the ``feeds`` table follow the config, by name; return the configured feeds.

    A new name is created; a changed URL starts afresh (validators cleared, a 410 forgiven:
    the operator pointed it somewhere else). A feed disabled by a 410 stays disabled
    until then; a feed that left the config is disabled, its entries kept.
    """
    by_name = {f.name: f for f in session.scalars(select(Feed))}
    out: dict[str, Feed] = {}
    for cfg in feeds:
        feed = by_name.get(cfg.name)
        if feed is None:
            feed = Feed(
                name=cfg.name,
                url=cfg.url,
                configured_url=cfg.url,
                enabled=cfg.enabled,
                consecutive_errors=0,
            )
            session.add(feed)
        else:
            if feed.configured_url != cfg.url:
                feed.url = feed.configured_url = cfg.url
                feed.etag = feed.last_modified = None
                feed.consecutive_errors = 0
                if feed.last_status == "gone":
                    feed.last_status = None
                    feed.last_error = None
            feed.enabled = cfg.enabled and feed.last_status != "gone"
        out[cfg.name] = feed
    configured = {f.name for f in feeds}
    for name, feed in by_name.items():
        if name not in configured and feed.enabled:
            feed.enabled = False
    session.flush()
    return out


def list_feeds(session: Session) -> list[Feed]:
    return list(session.scalars(select(Feed).order_by(Feed.name)))


def record_fetch(
    session: Session,
    feed_id: int,
    *,
    status: FeedStatus,
    now: datetime,
    http_status: int | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    new_url: str | None = None,
    message: str | None = None,
) -> None:
    """Record one fetch on its feed: health for ``status``, validators for the next GET.

    An error keeps the stored validators and URL, so nothing already known is lost; a
    410 disables the feed; a success (or a 304) resets the error count.
    """
    values: dict[str, Any] = {
        "last_fetched_at": now,
        "last_status": status,
        "last_http_status": http_status,
        "last_error": message,
    }
    if status in ("error", "gone"):
        values["consecutive_errors"] = Feed.consecutive_errors + 1
        if status == "gone":
            values["enabled"] = False
    else:
        values["consecutive_errors"] = 0
        values["last_success_at"] = now
        values["etag"] = etag
        values["last_modified"] = last_modified
        if new_url:
            values["url"] = new_url
    session.execute(update(Feed).where(Feed.id == feed_id).values(**values))


def day_validators(session: Session, feed_ids: Sequence[int]) -> dict[int, dict[str, Validators]]:
    """The (ETag, Last-Modified) kept per listing-day URL of each Daily Papers feed."""
    out: dict[int, dict[str, Validators]] = {}
    for part in chunks(list(feed_ids)):
        rows = session.execute(
            select(FeedDay.feed_id, FeedDay.url, FeedDay.etag, FeedDay.last_modified).where(
                FeedDay.feed_id.in_(part)
            )
        )
        for fid, url, etag, modified in rows:
            out.setdefault(fid, {})[url] = (etag, modified)
    return out


def record_day_validators(
    session: Session, feed_id: int, validators: Mapping[str, Validators], *, now: datetime
) -> None:
    """Keep exactly these days' validators for the feed: days no longer read, failed
    or without any validator are forgotten (so they are read in full next time)."""
    session.execute(delete(FeedDay).where(FeedDay.feed_id == feed_id))
    rows = [
        {"feed_id": feed_id, "url": url, "etag": etag, "last_modified": modified, "updated_at": now}
        for url, (etag, modified) in validators.items()
        if etag or modified
    ]
    if rows:
        session.execute(insert(FeedDay), rows)


# -- entries -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreResult:
    """How one batch landed: every distinct guid counts once."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0


_CONTENT = (
    "title",
    "summary",
    "link",
    "authors",
    "categories",
    "extra",
    "upvotes",
    "upvotes_at",
    "listed_at",
    "published_at",
)


def _upvotes(extra: Mapping[str, str]) -> int | None:
    value = extra.get("hf:upvotes")
    if value is None:
        return None
    try:
        return int(value.strip().replace(",", ""))
    except ValueError:
        return None


def _listed(extra: Mapping[str, str]) -> datetime | None:
    value = extra.get("hf:listed")
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        return None


def _row(p: ParsedEntry, now: datetime) -> dict[str, Any]:
    extra = dict(p.extra)
    upvotes = _upvotes(extra)
    return {
        "title": p.title,
        "summary": p.summary,
        "link": p.link,
        "authors": list(p.authors),
        "categories": list(p.categories),
        "extra": extra,
        "upvotes": upvotes,
        "upvotes_at": now if upvotes is not None else None,
        "listed_at": _listed(extra),
        "published_at": p.published,
    }


def _merge(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Fold a new sighting into a stored entry without losing what it had.

    Newer text wins when present; tags and extension fields are united; the latest read
    of the upvotes wins (two reads at the same moment: the higher, as the fresher copy);
    the earliest publish time and listing day stay (an undated entry keeps its first
    fetch time; the listing day in ``extra`` too).
    """
    upvotes, upvotes_at = old["upvotes"], old["upvotes_at"]
    if new["upvotes"] is not None:
        if upvotes is None or upvotes_at is None or new["upvotes_at"] > upvotes_at:
            upvotes, upvotes_at = new["upvotes"], new["upvotes_at"]
        elif new["upvotes_at"] == upvotes_at:
            upvotes = max(upvotes, new["upvotes"])
    listed = [v for v in (old["listed_at"], new["listed_at"]) if v is not None]
    extra = {**old["extra"], **new["extra"]}
    days = [e["hf:listed"] for e in (old["extra"], new["extra"]) if e.get("hf:listed")]
    if days:  # the first listing day, as listed_at (a 304 for it leaves a later day alone)
        extra["hf:listed"] = min(days)
    return {
        "title": new["title"] or old["title"],
        "summary": new["summary"] or old["summary"],
        "link": new["link"] or old["link"],
        "authors": new["authors"] or old["authors"],
        "categories": list(dict.fromkeys([*old["categories"], *new["categories"]])),
        "extra": extra,
        "upvotes": upvotes,
        "upvotes_at": upvotes_at,
        "listed_at": min(listed) if listed else None,
        "published_at": min(old["published_at"], new["published_at"]),
    }


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal content: a re-read of the same count is no change (its time still refreshes)."""
    return all(a[k] == b[k] for k in _CONTENT if k != "upvotes_at")


def _snapshot(e: Entry) -> dict[str, Any]:
    return {k: getattr(e, k) for k in _CONTENT}


def store_entries(
    session: Session, feed_id: int, entries: Iterable[ParsedEntry], *, now: datetime
) -> StoreResult:
    """Insert or update one feed's batch, deduplicated within and across feeds.

    The same guid from this feed updates its entry; another guid with a known dedupe key
    (the paper through a second feed, or a new arXiv version) joins that entry.
    """
    first: dict[str, ParsedEntry] = {}
    for p in entries:  # a feed that repeats an item stores its first copy
        first.setdefault(p.guid, p)
    batch = list(first.values())
    if not batch:
        return StoreResult()
    guids = [p.guid for p in batch]
    known_guid: dict[str, int] = {}
    for part in chunks(guids):
        rows = session.execute(
            select(EntrySource.guid, EntrySource.entry_id).where(
                EntrySource.feed_id == feed_id, EntrySource.guid.in_(part)
            )
        )
        known_guid.update({g: eid for g, eid in rows})
    keys = list({p.dedupe_key for p in batch if p.guid not in known_guid})
    stored: dict[int, Entry] = {}
    by_key: dict[str, int] = {}
    for key_part in chunks(keys):
        for e in session.scalars(select(Entry).where(Entry.dedupe_key.in_(key_part))):
            stored[e.id] = e
            by_key[e.dedupe_key] = e.id
    missing_ids = list(set(known_guid.values()) - stored.keys())
    for id_part in chunks(missing_ids):
        for e in session.scalars(select(Entry).where(Entry.id.in_(id_part))):
            stored[e.id] = e

    current = {eid: _snapshot(e) for eid, e in stored.items()}
    fresh: dict[str, dict[str, Any]] = {}  # dedupe_key -> row, for entries new in this batch
    fresh_guids: list[tuple[str, str]] = []  # (guid, dedupe_key) sources of new entries
    new_sources: list[dict[str, Any]] = []
    changed: set[int] = set()
    new = updated = unchanged = 0
    for p in batch:
        row = _row(p, now)
        eid = known_guid.get(p.guid)
        if eid is None:
            eid = by_key.get(p.dedupe_key)
            if eid is not None:
                new_sources.append({"guid": p.guid, "entry_id": eid})
        if eid is not None and eid in current:
            merged = _merge(current[eid], row)
            if not _same(merged, current[eid]):
                updated += 1
            else:
                unchanged += 1
            if merged != current[eid]:
                current[eid] = merged
                changed.add(eid)
        elif p.dedupe_key in fresh:
            fresh[p.dedupe_key] = _merge(fresh[p.dedupe_key], row)
            fresh_guids.append((p.guid, p.dedupe_key))
            updated += 1
        else:
            fresh[p.dedupe_key] = row
            fresh_guids.append((p.guid, p.dedupe_key))
            new += 1

    if fresh:
        inserted = session.execute(
            insert(Entry).returning(Entry.id, Entry.dedupe_key),
            [
                {
                    **row,
                    "dedupe_key": key,
                    "feed_id": feed_id,
                    "first_seen_at": now,
                    "updated_at": now,
                }
                for key, row in fresh.items()
            ],
        )
        ids = {key: eid for eid, key in inserted}
        new_sources.extend({"guid": g, "entry_id": ids[k]} for g, k in fresh_guids)
    if new_sources:
        session.execute(
            insert(EntrySource),
            [{**s, "feed_id": feed_id, "first_seen_at": now} for s in new_sources],
        )
    if changed:
        session.execute(
            update(Entry),
            [{"id": eid, **current[eid], "updated_at": now} for eid in sorted(changed)],
        )
    return StoreResult(new=new, updated=updated, unchanged=unchanged)


def entry_counts(session: Session) -> dict[int, int]:
    """Entries each feed has carried (an entry seen in two feeds counts in both)."""
    rows = session.execute(
        select(EntrySource.feed_id, func.count(distinct(EntrySource.entry_id))).group_by(
            EntrySource.feed_id
        )
    )
    return {fid: n for fid, n in rows}


def entry_totals(session: Session) -> tuple[int, datetime | None]:
    """Number of entries, and when the newest one was first seen."""
    n, newest = session.execute(select(func.count(Entry.id), func.max(Entry.first_seen_at))).one()
    return int(n), newest


class EntryColumns(Protocol):
    """What :func:`to_article` reads: an ``Entry``, or a row selecting these columns."""

    @property
    def id(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def link(self) -> str: ...
    @property
    def authors(self) -> list[str]: ...
    @property
    def categories(self) -> list[str]: ...
    @property
    def extra(self) -> dict[str, Any]: ...
    @property
    def upvotes(self) -> int | None: ...
    @property
    def published_at(self) -> datetime: ...
    @property
    def first_seen_at(self) -> datetime: ...


def to_article(entry: EntryColumns, *, feed_name: str = "") -> Article:
    """A stored entry as the plain value matching and rendering work on."""
    extra = entry.extra or {}
    return Article(
        id=entry.id,
        title=entry.title,
        summary=entry.summary,
        link=entry.link,
        authors=tuple(entry.authors or ()),
        categories=tuple(entry.categories or ()),
        published=entry.published_at,
        first_seen=entry.first_seen_at,
        upvotes=entry.upvotes,
        comments=_count(extra.get("hf:comments")),
        author_count=_count(extra.get("hf:authors")),
        feed_name=feed_name,
        paper_url=_text(extra.get("hf:paper")),
        abs_url=_text(extra.get("arxiv:abs")),
        pdf_url=_text(extra.get("arxiv:pdf")),
    )


def _count(value: object) -> int | None:
    """A stored count extra as a number (None when absent or not one)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _text(value: object) -> str:
    """A stored extra as text ("" when absent or not a string: JSON may hold anything)."""
    return value if isinstance(value, str) else ""
