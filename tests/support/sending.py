"""Seeding and clocks for the delivery tests: subscribers and entries straight into the
database (through the ORM), and a clock that only moves when told to."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter.db import session_scope
from newsletter.models import Digest, DigestEntry, Entry, Subscriber
from newsletter.pipeline.jobs import DigestJob, Draft
from tests.support.smtp import SmtpTestServer


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


class ManualClock:
    """``now()`` and ``sleep()`` for code that takes them: sleeping advances time."""

    def __init__(self, start: datetime) -> None:
        self.current = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self.current

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.current += timedelta(seconds=seconds)

    def advance(self, **kw: float) -> datetime:
        with self._lock:
            self.current += timedelta(**kw)
            return self.current


def add_subscribers(
    engine: Engine,
    emails: Sequence[str],
    *,
    keywords: Sequence[str] = ("optimization",),
    timezone: str | None = None,
    send_time: str | None = None,
    frequency: str = "daily",
    weekday: int = 0,
    created_at: datetime | None = None,
    **extra: Any,
) -> list[int]:
    """Subscribers as a sync would store them; returns their ids in order."""
    with session_scope(engine) as session:
        subs = [
            Subscriber(
                email=email,
                name=email.split("@")[0].title(),
                profile={"keywords": [{"term": k} for k in keywords], "exclude": []},
                frequency=frequency,
                weekday=weekday,
                send_time=send_time,
                timezone=timezone,
                active=True,
                created_at=created_at or utc(2026, 1, 1),
                **extra,
            )
            for email in emails
        ]
        session.add_all(subs)
        session.flush()
        return [s.id for s in subs]


def add_entries(
    engine: Engine, titles: Sequence[str], *, first_seen: datetime, summary: str = ""
) -> list[int]:
    """Entries first fetched at ``first_seen``; returns their ids in order."""
    with session_scope(engine) as session:
        rows = [
            Entry(
                dedupe_key=f"test:{first_seen.isoformat()}:{i}:{t}",
                title=t,
                summary=summary or f"An abstract about {t.lower()}.",
                link=f"https://example.org/papers/{first_seen:%Y%m%d}/{i}",
                authors=["A. Author"],
                categories=[],
                extra={},
                published_at=first_seen,
                first_seen_at=first_seen,
                updated_at=first_seen,
            )
            for i, t in enumerate(titles)
        ]
        session.add_all(rows)
        session.flush()
        return [e.id for e in rows]


def digests(engine: Engine) -> list[Digest]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Digest).order_by(Digest.id)))


def digest_entry_ids(engine: Engine, digest_id: int) -> list[int]:
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(DigestEntry.entry_id)
                .where(DigestEntry.digest_id == digest_id)
                .order_by(DigestEntry.rank)
            )
        )


def sent_entry_ids(session: Session, subscriber_ids: Sequence[int]) -> dict[int, set[int]]:
    """Entries already put in a digest (sent or ambiguous) of each subscriber: the
    outbox's own record, read plainly, as the oracle of these tests."""
    out: dict[int, set[int]] = defaultdict(set)
    rows = session.execute(
        select(DigestEntry.subscriber_id, DigestEntry.entry_id).where(
            DigestEntry.subscriber_id.in_(list(subscriber_ids))
        )
    )
    for sid, eid in rows:
        out[sid].add(eid)
    return dict(out)


SIMPLE_FROM = "Digest <digest@example.org>"


def simple_compose(session: Session, requests: Sequence[DigestJob]) -> dict[int, Draft | None]:
    """A small, obvious composer for the delivery mechanics: entries first seen in the
    window, not yet sent, whose title contains one of the subscriber's keywords."""
    ids = [r.subscriber_id for r in requests]
    subs = {s.id: s for s in session.scalars(select(Subscriber).where(Subscriber.id.in_(ids)))}
    sent = sent_entry_ids(session, ids)
    out: dict[int, Draft | None] = {}
    for r in requests:
        sub = subs[r.subscriber_id]
        terms = [k["term"].lower() for k in sub.profile.get("keywords", [])]
        rows = session.scalars(
            select(Entry)
            .where(Entry.first_seen_at > r.window_start, Entry.first_seen_at <= r.window_end)
            .order_by(Entry.id)
        )
        chosen = [
            e
            for e in rows
            if e.id not in sent.get(sub.id, set()) and any(t in e.title.lower() for t in terms)
        ]
        if not chosen:
            out[sub.id] = None
            continue
        msg = EmailMessage()
        msg["From"] = SIMPLE_FROM
        msg["To"] = sub.email
        msg["Subject"] = f"{len(chosen)} new for {sub.email} ({r.period})"
        mid = make_msgid(domain="example.org")
        msg["Message-ID"] = mid
        msg["X-Entry-Ids"] = ",".join(str(e.id) for e in chosen)
        msg.set_content("\n".join(e.title for e in chosen) + "\n")
        out[sub.id] = Draft(
            subscriber_id=sub.id,
            recipient=sub.email,
            subject=str(msg["Subject"]),
            message_id=mid,
            data=msg.as_bytes(),
            entries=tuple((e.id, 1.0) for e in chosen),
        )
    return out


SECRET = "test-secret-key-0123456789-abcdefghijklmnop"


def write_config(
    directory: Path, db_url: str, server: SmtpTestServer | None = None, **smtp: Any
) -> Path:
    """A ``newsletter.toml`` for subprocess tests: this database, this SMTP server."""
    lines = [
        "[database]",
        f"url = {json.dumps(db_url)}",
        "[newsletter]",
        'from = "Research Digest <digest@example.org>"',
        'base_url = "https://digest.example.org"',
        f'delivery = "{"smtp" if server else "preview"}"',
        "batch_size = 5",
    ]
    if server is not None:
        lines.append("[smtp]")
        for key, value in server.smtp_config(**smtp).items():
            lines.append(f"{key} = {json.dumps(value)}")
    path = directory / "newsletter.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_env(*, secret: str | None = SECRET, **extra: str) -> dict[str, str]:
    """The environment of a ``newsletter`` subprocess: the checkout importable, no
    ``NEWSLETTER_*`` of ours, the secret key (None: none) and ``extra``."""
    root = Path(__file__).resolve().parent.parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if secret is not None:
        env["NEWSLETTER_SECRET_KEY"] = secret
    env.update(extra)
    return env
