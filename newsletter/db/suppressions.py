"""The suppression list: who unsubscribed, when and how. Every send checks it.

A suppression is keyed by email (unique), so it survives the subscriber row being
re-created by a sync and always wins over ``active: true`` in YAML. Writes are single
``INSERT ... ON CONFLICT DO NOTHING`` statements: concurrent unsubscribes of the same
address (a mail provider retrying, a double click) neither fail nor duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, delete, exists, or_, select, update
from sqlalchemy.orm import Session

from newsletter.db.core import dialect_insert
from newsletter.errors import DatabaseError
from newsletter.models import Subscriber, Suppression, utcnow

Source = Literal["one-click", "page", "mailto", "operator"]
SOURCES: tuple[Source, ...] = get_args(Source)
# Sources a subscriber may undo from the web page; an operator's decision (a complaint,
# a bounce) is not theirs to reverse.
SELF_SERVICE: frozenset[str] = frozenset({"one-click", "page", "mailto"})


@dataclass(frozen=True, slots=True)
class SuppressionInfo:
    """One row of the suppression list, with the subscriber's name when known."""

    email: str
    source: str
    created_at: datetime
    subscriber_id: int | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """The subscriber an unsubscribe link names, as the web pages need it."""

    id: int
    email: str
    name: str | None
    token_version: int
    token_salt: str
    deleted: bool
    profile: dict[str, Any]
    frequency: str
    timezone: str | None
    send_time: str | None


def suppress(
    session: Session,
    *,
    email: str,
    subscriber_id: int | None,
    source: Source,
    now: datetime | None = None,
) -> bool:
    """Add ``email`` to the suppression list; True if it was not there before.

    Idempotent: an address already suppressed keeps its first time and source.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown suppression source {source!r}")
    stmt = (
        dialect_insert(session, Suppression)
        .values(
            email=email,
            subscriber_id=subscriber_id,
            source=source,
            created_at=now or utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(Suppression.id)
    )
    return session.execute(stmt).first() is not None


def unsuppress(session: Session, email: str, *, sources: Iterable[str] | None = None) -> bool:
    """Remove ``email`` from the list (only rows of ``sources`` if given); True if removed."""
    stmt = delete(Suppression).where(Suppression.email == email)
    if sources is not None:
        stmt = stmt.where(Suppression.source.in_(list(sources)))
    return bool(session.execute(stmt.returning(Suppression.id)).first())


def get_suppression(session: Session, email: str) -> SuppressionInfo | None:
    row = session.execute(
        select(Suppression, Subscriber.name)
        .outerjoin(Subscriber, Subscriber.id == Suppression.subscriber_id)
        .where(Suppression.email == email)
    ).first()
    if row is None:
        return None
    s, name = row
    return SuppressionInfo(s.email, s.source, s.created_at, s.subscriber_id, name)


def suppressed_clause() -> ColumnElement[bool]:
    """SQL: the subscriber row is on the suppression list, by address or by id.

    Two EXISTS rather than one with OR, so each uses its index.
    """
    return or_(
        exists().where(Suppression.email == Subscriber.email),
        exists().where(Suppression.subscriber_id == Subscriber.id),
    )


def deliverable_clauses() -> list[ColumnElement[bool]]:
    """SQL: subscribers mail may go to — active, file not deleted, not suppressed.

    The one definition shared by syncing, planning and the check right before a send.
    """
    return [
        Subscriber.active.is_(True),
        Subscriber.deleted_at.is_(None),
        ~exists().where(Suppression.email == Subscriber.email),
        ~exists().where(Suppression.subscriber_id == Subscriber.id),
    ]


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email == email)) is not None


def list_suppressions(session: Session) -> list[SuppressionInfo]:
    """The whole list, newest first (``newsletter subscribers list --unsubscribed``)."""
    rows = session.execute(
        select(Suppression, Subscriber.name)
        .outerjoin(Subscriber, Subscriber.id == Suppression.subscriber_id)
        .order_by(Suppression.created_at.desc(), Suppression.email)
    )
    return [
        SuppressionInfo(s.email, s.source, s.created_at, s.subscriber_id, name) for s, name in rows
    ]


def link_target(session: Session, subscriber_id: int) -> LinkTarget | None:
    """The subscriber a token names, or None when the row is gone."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        return None
    return LinkTarget(
        id=sub.id,
        email=sub.email,
        name=sub.name,
        token_version=sub.token_version,
        token_salt=sub.token_salt,
        deleted=sub.deleted_at is not None,
        profile=dict(sub.profile or {}),
        frequency=sub.frequency,
        timezone=sub.timezone,
        send_time=sub.send_time,
    )


def revoke_links(session: Session, subscriber_id: int) -> int:
    """Bump the subscriber's ``token_version``: every link made before stops working."""
    new = session.scalar(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(token_version=Subscriber.token_version + 1)
        .returning(Subscriber.token_version)
    )
    if new is None:
        raise DatabaseError(f"no subscriber with id {subscriber_id}")
    return int(new)
