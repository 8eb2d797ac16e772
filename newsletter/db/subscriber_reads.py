"""Subscribers read back: profiles for matching, ids and link keys for a batch, the
operator's list. The write side (the bulk sync from YAML) is :mod:`.subscribers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from functools import lru_cache
from typing import Any, Literal, cast, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.db.core import chunks
from newsletter.db.suppressions import deliverable_clauses, suppressed_clause
from newsletter.domain import FIELDS, Field, Frequency, Keyword, Profile
from newsletter.errors import DatabaseError
from newsletter.models import Subscriber
from newsletter.periods import Schedule

Status = Literal["active", "inactive", "deleted", "unsubscribed"]
STATUSES: tuple[Status, ...] = get_args(Status)


def _keywords_from_json(items: Any, *, with_weight: bool) -> tuple[Keyword, ...]:
    """Keywords of a stored profile; strings and mappings alike (the YAML shapes).

    Loading profiles is on the send's path (a few per millisecond), so plain dicts,
    the stored shape, skip the slower ``Mapping`` check.
    """
    out: list[Keyword] = []
    for item in items or ():
        if isinstance(item, str):
            if item.strip():
                out.append(Keyword(item.strip()))
            continue
        if type(item) is not dict and not isinstance(item, Mapping):
            continue
        raw = item.get("term")
        term = raw.strip() if type(raw) is str else str(raw or "").strip()
        if not term:
            continue
        field_name = item.get("field")
        weight = item.get("weight", 1.0) if with_weight else 1.0
        out.append(
            _keyword(
                term,
                float(weight) if isinstance(weight, (int, float)) else 1.0,
                bool(item.get("exact", False)),
                cast(Field, field_name) if field_name in FIELDS else None,
            )
        )
    return tuple(out)


@lru_cache(maxsize=1 << 16)
def _keyword(term: str, weight: float, exact: bool, field: Field | None) -> Keyword:
    """One shared, immutable Keyword per distinct stored keyword.

    Profiles share their popular keywords, and a send keeps a batch of profiles alive
    while it matches them: fewer long-lived objects, fewer full garbage collections.
    """
    return Keyword(term, weight=weight, exact=exact, field=field)


# The columns a Profile is made of, read as plain rows: no ORM instances to build.
_PROFILE_COLUMNS = (
    Subscriber.id,
    Subscriber.email,
    Subscriber.name,
    Subscriber.profile,
    Subscriber.max_items,
    Subscriber.frequency,
    Subscriber.weekday,
    Subscriber.send_time,
    Subscriber.timezone,
    Subscriber.active,
    Subscriber.source_file,
)


def _trending(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def _to_profile(row: Sequence[Any]) -> Profile:
    """A Profile from a row of ``_PROFILE_COLUMNS``."""
    _id, email, name, data, max_items, frequency, weekday, send_at, tz, active, source = row
    data = data or {}
    try:
        send_time = time.fromisoformat(send_at) if send_at else None
    except ValueError as e:
        raise DatabaseError(f"subscriber {email}: stored send_time {send_at!r} is not HH:MM") from e
    return Profile(
        email=email,
        keywords=_keywords_from_json(data.get("keywords"), with_weight=True),
        name=name,
        exclude=_keywords_from_json(data.get("exclude"), with_weight=False),
        max_items=max_items,
        trending=_trending(data.get("trending")),
        frequency=cast(Frequency, frequency if frequency == "weekly" else "daily"),
        weekday=weekday,
        send_time=send_time,
        timezone=tz,
        active=active,
        source=source,
    )


# -- sync ------------------------------------------------------------------------------


def active_subscriber_ids(session: Session) -> list[int]:
    """Every subscriber mail may go to (active, profile present, not unsubscribed)."""
    return list(
        session.scalars(select(Subscriber.id).where(*deliverable_clauses()).order_by(Subscriber.id))
    )


def load_profiles(
    session: Session, ids: Sequence[int], *, include_suppressed: bool = False
) -> dict[int, Profile]:
    """The profiles of a batch of subscribers, one query per 500 ids.

    Unknown ids, and unsubscribed ones unless ``include_suppressed``, are left out.
    """
    out: dict[int, Profile] = {}
    for chunk in chunks(list(ids)):
        stmt = select(*_PROFILE_COLUMNS).where(Subscriber.id.in_(chunk))
        if not include_suppressed:
            stmt = stmt.where(~suppressed_clause())
        for row in session.execute(stmt):
            out[row[0]] = _to_profile(row)
    return out


def is_suppressed(session: Session, subscriber_id: int) -> bool:
    """True when this subscriber unsubscribed (by address or by id)."""
    stmt = select(suppressed_clause()).select_from(Subscriber)
    return bool(session.scalar(stmt.where(Subscriber.id == subscriber_id)))


def subscriber_id(session: Session, email: str) -> int | None:
    """The id of the subscriber with this address (compared stripped and lower-cased)."""
    return session.scalar(select(Subscriber.id).where(Subscriber.email == email.strip().lower()))


def link_keys(session: Session, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """Each subscriber's (token_version, token_salt), in bulk: what a link token needs."""
    out: dict[int, tuple[int, str]] = {}
    for chunk in chunks(list(ids)):
        rows = session.execute(
            select(Subscriber.id, Subscriber.token_version, Subscriber.token_salt).where(
                Subscriber.id.in_(chunk)
            )
        )
        out.update({sid: (version, salt) for sid, version, salt in rows})
    return out


def token_versions(session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Each subscriber's unsubscribe-link version, in bulk."""
    out: dict[int, int] = {}
    for chunk in chunks(list(ids)):
        rows = session.execute(
            select(Subscriber.id, Subscriber.token_version).where(Subscriber.id.in_(chunk))
        )
        out.update({sid: version for sid, version in rows})
    return out


@dataclass(frozen=True, slots=True)
class SubscriberInfo:
    """One line of ``newsletter subscribers list``."""

    id: int
    email: str
    name: str | None
    status: Status
    frequency: str
    keywords: int
    source_file: str | None
    updated_at: datetime
    schedule: Schedule


def list_subscribers(
    session: Session, *, include_deleted: bool = False, ids: Sequence[int] | None = None
) -> list[SubscriberInfo]:
    """Subscribers (all, or those of ``ids``) with their effective status, by address."""
    stmt = select(Subscriber, suppressed_clause()).order_by(Subscriber.email)
    if not include_deleted:
        stmt = stmt.where(Subscriber.deleted_at.is_(None))
    if ids is not None:
        stmt = stmt.where(Subscriber.id.in_(list(ids)))
    out: list[SubscriberInfo] = []
    for sub, suppressed in session.execute(stmt):
        status: Status
        if suppressed:
            status = "unsubscribed"
        elif sub.deleted_at is not None:
            status = "deleted"
        elif not sub.active:
            status = "inactive"
        else:
            status = "active"
        out.append(
            SubscriberInfo(
                id=sub.id,
                email=sub.email,
                name=sub.name,
                status=status,
                frequency=sub.frequency,
                keywords=len((sub.profile or {}).get("keywords") or ()),
                source_file=sub.source_file,
                updated_at=sub.updated_at,
                schedule=Schedule(
                    frequency=sub.frequency,
                    weekday=sub.weekday,
                    send_time=time.fromisoformat(sub.send_time) if sub.send_time else None,
                    timezone=sub.timezone,
                ),
            )
        )
    return out
