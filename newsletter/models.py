"""ORM models (SQLAlchemy 2.0 typed declarative). Queries live in ``newsletter.db``.

Every table the product needs is declared here; schema changes go through an Alembic
migration in ``newsletter/migrations/versions`` so older databases upgrade in place.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from newsletter import clock

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return clock.now()


def new_token_salt() -> str:
    """128 random bits, hex: what binds a subscriber's links to this row of this database."""
    return secrets.token_hex(16)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns aware datetimes (SQLite would otherwise drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Feed(Base):
    """A configured feed and its fetch health (for conditional GET and ``status``)."""

    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)  # current URL (updated by permanent redirects)
    configured_url: Mapped[str] = mapped_column(Text)  # as written in the config
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    last_fetched_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(40))  # ok | not-modified | error | gone
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeedDay(Base):
    """The validators of one listing-day URL of a Daily Papers feed, for conditional GET.

    Such a feed reads one URL per day (``?date=YYYY-MM-DD``), each with an ETag and a
    Last-Modified of its own: the feed's own pair could hold one day's only.
    """

    __tablename__ = "feed_days"
    __table_args__ = (UniqueConstraint("feed_id", "url"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Entry(Base):
    """One paper or post, deduplicated across feeds and versions by ``dedupe_key``."""

    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(512), unique=True)
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[str]] = mapped_column(default=list)
    categories: Mapped[list[str]] = mapped_column(default=list)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    upvotes: Mapped[int | None] = mapped_column(Integer)
    upvotes_at: Mapped[datetime | None]  # when ``upvotes`` was last read: the latest read wins
    listed_at: Mapped[datetime | None] = mapped_column(index=True)  # first Daily Papers day
    published_at: Mapped[datetime]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    sources: Mapped[list[EntrySource]] = relationship(back_populates="entry")


class EntrySource(Base):
    """Which feed carried an entry under which guid: the same guid again is an update."""

    __tablename__ = "entry_sources"
    __table_args__ = (UniqueConstraint("feed_id", "guid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    guid: Mapped[str] = mapped_column(String(1024))
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), index=True)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    entry: Mapped[Entry] = relationship(back_populates="sources")


class Subscriber(Base):
    """A subscriber as last synced from YAML; the profile itself is kept as JSON.

    ``active`` mirrors the YAML; whether mail goes out also depends on the
    ``suppressions`` table, which a sync never touches.
    """

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    profile: Mapped[dict[str, Any]] = mapped_column(default=dict)  # keywords, exclude, ...
    frequency: Mapped[str] = mapped_column(String(10), default="daily")
    weekday: Mapped[int] = mapped_column(Integer, default=0)
    send_time: Mapped[str | None] = mapped_column(String(5))  # "HH:MM"; None: config default
    timezone: Mapped[str | None] = mapped_column(String(64))  # None: config default
    max_items: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    source_file: Mapped[str | None] = mapped_column(Text)
    source_hash: Mapped[str | None] = mapped_column(String(64))  # skip unchanged files on sync
    deleted_at: Mapped[datetime | None]  # its file went away: inactive, history kept
    token_version: Mapped[int] = mapped_column(Integer, default=1)  # bump to revoke links
    # Random per row and signed into every token: links outlive no database rebuild.
    token_salt: Mapped[str] = mapped_column(String(32), default=new_token_salt)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Suppression(Base):
    """An unsubscribe. It always wins over ``active: true`` in YAML."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    source: Mapped[str] = mapped_column(String(20))  # one-click | page | mailto | operator
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProfileChange(Base):
    """One change a feedback link made to a self-service profile file, for Undo."""

    __tablename__ = "profile_changes"
    __table_args__ = (Index("ix_profile_changes_subscriber_id", "subscriber_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))  # more | fewer
    summary: Mapped[str] = mapped_column(Text)  # what the page said was done
    source_file: Mapped[str] = mapped_column(Text)  # relative to subscribers_dir
    before_text: Mapped[str] = mapped_column(Text)
    after_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None]


class Digest(Base):
    """Outbox: one row per (subscriber, period), the unit of exactly-once delivery.

    ``pending`` -> ``sending`` -> ``sent`` | ``failed``; a row left in ``sending`` by a
    crash is ambiguous and is settled by hand (``newsletter resend``).
    """

    __tablename__ = "digests"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "period"),
        Index("ix_digests_status_next", "status", "next_attempt_at"),
        Index("ix_digests_status_id", "status", "id"),  # claims, in id order
        Index("ix_digests_status_lease", "status", "lease_until"),  # live leases
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    period: Mapped[str] = mapped_column(String(10))  # "2026-11-23" or "2026-W48"
    status: Mapped[str] = mapped_column(String(10), default="pending")
    window_start: Mapped[datetime | None]
    window_end: Mapped[datetime | None]
    subject: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    n_entries: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None]
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    entries: Mapped[list[DigestEntry]] = relationship(
        back_populates="digest", cascade="all, delete-orphan"
    )


class DigestCopy(Base):
    """A sent digest kept for "View in browser" (``/d/<token>``) until ``expires_at``.

    ``message`` is the sent MIME message, zstd-compressed (zlib before): the page shows
    its HTML part.
    """

    __tablename__ = "digest_copies"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), unique=True
    )
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    period: Mapped[str] = mapped_column(String(10))
    subject: Mapped[str] = mapped_column(Text)
    message: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RateHit(Base):
    """One counted use of a rate-limited form (``scope``: client | address), so limits
    hold across web processes and restarts. ``key`` is an HMAC of the address or
    client, never the value itself; rows older than the window are deleted as hits come.
    """

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_scope_key_at", "scope", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(index=True)


class DigestEntry(Base):
    """An entry put in a digest; unique per subscriber, so nobody gets a paper twice."""

    __tablename__ = "digest_entries"
    __table_args__ = (UniqueConstraint("subscriber_id", "entry_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"), index=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    rank: Mapped[int] = mapped_column(Integer, default=0)

    digest: Mapped[Digest] = relationship(back_populates="entries")


class Run(Base):
    """One fetch, send or preview run, for ``newsletter status``."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # fetch | send | preview
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | ok | error
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)


class Lease(Base):
    """A named lease (e.g. the scheduler's), so two processes never both hold it."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
