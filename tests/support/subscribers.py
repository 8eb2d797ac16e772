"""Helpers for the profile, sync and ``match`` tests: profile files on disk, rows
straight into the database through the ORM (no feed code involved), and a counter of
SQL statements to prove that work is done in bulk."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select

from newsletter.db import session_scope
from newsletter.models import Digest, DigestEntry, Entry, Feed, Subscriber, Suppression


def write_profile(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def profile_yaml(email: str, *keywords: str, **extra: str) -> str:
    lines = [f"email: {email}", "keywords:", *(f"  - {k}" for k in keywords or ("x",))]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def subscriber_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every column of every subscriber, by address: to compare before and after."""
    with session_scope(engine) as session:
        return {
            s.email: {c.key: getattr(s, c.key) for c in Subscriber.__table__.columns}
            for s in session.scalars(select(Subscriber))
        }


def suppress(engine: Engine, email: str, *, by_id: bool = False) -> None:
    """An unsubscribe as the web app records it (by address, or only by id)."""
    with session_scope(engine) as session:
        sid = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
        session.add(
            Suppression(
                email="someone-else@example.org" if by_id else email,
                subscriber_id=sid,
                source="one-click",
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )


@dataclass(frozen=True)
class Seed:
    title: str
    first_seen: datetime
    summary: str = ""
    published: datetime | None = None
    upvotes: int | None = None
    authors: tuple[str, ...] = ()


def add_entries(engine: Engine, seeds: Sequence[Seed], *, feed: str = "daily-papers") -> list[int]:
    """Entries as ingestion would store them; returns their ids in order."""
    with session_scope(engine) as session:
        feed_row = session.scalar(select(Feed).where(Feed.name == feed))
        if feed_row is None:
            feed_row = Feed(name=feed, url="https://example.org/feed", configured_url="x")
            session.add(feed_row)
            session.flush()
        rows = [
            Entry(
                dedupe_key=f"test:{feed}:{s.first_seen.isoformat()}:{i}",
                feed_id=feed_row.id,
                title=s.title,
                summary=s.summary,
                link=f"https://example.org/papers/{i}",
                authors=list(s.authors),
                categories=[],
                extra={"hf:authors": "5"} if s.upvotes is not None else {},
                upvotes=s.upvotes,
                published_at=s.published or s.first_seen,
                first_seen_at=s.first_seen,
                updated_at=s.first_seen,
            )
            for i, s in enumerate(seeds)
        ]
        session.add_all(rows)
        session.flush()
        return [e.id for e in rows]


def add_digest(
    engine: Engine,
    subscriber_id: int,
    *,
    status: str,
    window_start: datetime,
    window_end: datetime,
    entry_ids: Sequence[int] = (),
    period: str | None = None,
) -> None:
    with session_scope(engine) as session:
        digest = Digest(
            subscriber_id=subscriber_id,
            period=period or f"{window_end:%Y-%m-%d}",
            status=status,
            window_start=window_start,
            window_end=window_end,
            n_entries=len(entry_ids),
            created_at=window_end,
        )
        digest.entries = [
            DigestEntry(subscriber_id=subscriber_id, entry_id=e, rank=i)
            for i, e in enumerate(entry_ids)
        ]
        session.add(digest)


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement sent while inside (an executemany counts once)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("PRAGMA", "BEGIN", "SAVEPOINT", "RELEASE")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
