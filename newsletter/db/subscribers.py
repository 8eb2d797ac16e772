"""Subscribers: the bulk sync from YAML profiles, and loading profiles back.

A sync reads every subscriber once, then inserts, updates and deactivates in bulk
(a handful of statements for 10,000 profiles). It never touches ``suppressions``:
an unsubscribe always wins over ``active: true`` in YAML. Whether mail may go out is
"effectively active": active in YAML, its profile still present, and not suppressed
(:func:`newsletter.db.suppressions.deliverable_clauses`, the rule the outbox uses too).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from functools import lru_cache
from typing import Any, Literal, cast, get_args

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.db.core import chunks
from newsletter.db.suppressions import deliverable_clauses, suppressed_clause
from newsletter.domain import FIELDS, Field, Frequency, Keyword, Profile
from newsletter.errors import DatabaseError, SyncRefused
from newsletter.models import Subscriber, Suppression
from newsletter.periods import Schedule

Status = Literal["active", "inactive", "deleted", "unsubscribed"]
STATUSES: tuple[Status, ...] = get_args(Status)

# -- stored form -----------------------------------------------------------------------


def _keyword_json(kw: Keyword, *, with_weight: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"term": kw.term}
    if with_weight:
        out["weight"] = kw.weight
    out["exact"] = kw.exact
    out["field"] = kw.field
    return out


def profile_row(profile: Profile) -> dict[str, Any]:
    """The ``subscribers`` columns of a profile, with the hash that detects edits."""
    row: dict[str, Any] = {
        "email": profile.email,
        "name": profile.name,
        "profile": {
            "keywords": [_keyword_json(k, with_weight=True) for k in profile.keywords],
            "exclude": [_keyword_json(k, with_weight=False) for k in profile.exclude],
            # Only when set, so profiles without it keep their stored hash.
            **({"trending": profile.trending} if profile.trending else {}),
        },
        "frequency": profile.frequency,
        "weekday": profile.weekday,
        "send_time": profile.send_time.strftime("%H:%M") if profile.send_time else None,
        "timezone": profile.timezone,
        "max_items": profile.max_items,
        "active": profile.active,
        "source_file": profile.source,
    }
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    row["source_hash"] = hashlib.sha256(canonical.encode()).hexdigest()
    return row


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


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync did, by address."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()  # includes those brought back after their file returned
    deactivated: tuple[str, ...] = ()  # profile gone: inactive, row and history kept
    unchanged: int = 0
    held: tuple[str, ...] = ()  # invalid somewhere: left exactly as they were
    suppressed: tuple[str, ...] = ()  # active in YAML but unsubscribed: they stay so
    # (file, old, new): the one address that left a file and the one that came into it
    moved: tuple[tuple[str, str, str], ...] = ()
    # (file, address, message): a database error on this profile; left as it was
    failed: tuple[tuple[str, str, str], ...] = ()

    @property
    def changed(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deactivated)


def sync_subscribers(
    session: Session,
    profiles: Sequence[Profile],
    *,
    now: datetime,
    keep_files: Collection[str] = (),
    keep_emails: Collection[str] = (),
    max_deactivate_share: float | None = None,
    only_files: Collection[str] | None = None,
) -> SyncResult:
    """Make ``subscribers`` follow ``profiles`` (all valid profiles of the directory).

    New addresses are created, edited profiles updated (unchanged ones skipped by
    hash), and subscribers whose profile is gone are deactivated with ``deleted_at``
    set. Left exactly as they are: addresses in ``keep_emails`` (their profile is
    invalid or duplicated) and subscribers that came from a file in ``keep_files``
    (it failed to read, so we cannot tell who is still in it). Idempotent.

    ``max_deactivate_share`` (0..1, None: no limit): raise :class:`SyncRefused`, before
    writing anything, when the sync would deactivate every current subscriber, or more
    than this share of them (and more than one). A database error on one profile is
    kept to that profile (savepoints) and reported in ``failed``.

    ``only_files``: ``profiles`` are every profile of these files only (one file the web
    just rewrote): subscribers of other files are neither read nor touched.
    """
    rows = [profile_row(p) for p in profiles]
    by_email = {r["email"]: r for r in rows}
    if len(by_email) != len(rows):
        raise ValueError("duplicate addresses in the profiles to sync")
    keep_emails = set(keep_emails) - set(by_email)
    keep_files = set(keep_files)

    query = select(
        Subscriber.id,
        Subscriber.email,
        Subscriber.source_hash,
        Subscriber.source_file,
        Subscriber.deleted_at,
    )
    if only_files is not None:
        query = query.where(
            or_(Subscriber.source_file.in_(list(only_files)), Subscriber.email.in_(list(by_email)))
        )
    existing = session.execute(query).all()
    known: dict[str, int] = {}
    to_update: list[dict[str, Any]] = []
    to_deactivate: list[int] = []
    updated: list[str] = []
    deactivated: list[str] = []
    unchanged = 0
    for sid, email, digest, source, deleted_at in existing:
        known[email] = sid
        row = by_email.get(email)
        if row is None:
            if deleted_at is None and email not in keep_emails and source not in keep_files:
                to_deactivate.append(sid)
                deactivated.append(email)
            continue
        if digest == row["source_hash"] and deleted_at is None:
            unchanged += 1
            continue
        to_update.append({**row, "id": sid, "deleted_at": None, "updated_at": now})
        updated.append(email)
    to_insert = [
        {**r, "created_at": now, "updated_at": now} for r in rows if r["email"] not in known
    ]
    current = sum(1 for *_, deleted_at in existing if deleted_at is None)
    if max_deactivate_share is not None:
        _refuse_mass_deactivation(len(deactivated), current, max_deactivate_share)

    failed: list[tuple[str, str, str]] = []
    inserted = _apply_rows(session, insert(Subscriber), to_insert, failed)
    updated = [r["email"] for r in _apply_rows(session, update(Subscriber), to_update, failed)]
    for chunk in chunks(to_deactivate):
        session.execute(
            update(Subscriber)
            .where(Subscriber.id.in_(chunk))
            .values(active=False, deleted_at=now, updated_at=now, source_hash=None)
        )
    wanted_active = [r["email"] for r in rows if r["active"]]
    suppressed = sorted(_suppressed_among(session, wanted_active))
    sources = {sid: source for sid, _e, _d, source, _del in existing}
    gone_by_file: dict[str, list[str]] = {}
    for sid, email in zip(to_deactivate, deactivated, strict=True):
        gone_by_file.setdefault(sources[sid] or "", []).append(email)
    moved: list[tuple[str, str, str]] = []
    for r in inserted:
        gone = gone_by_file.get(r["source_file"] or "")
        came = [i for i in inserted if i["source_file"] == r["source_file"]]
        if gone and len(gone) == 1 and len(came) == 1:
            moved.append((r["source_file"], gone[0], r["email"]))
    return SyncResult(
        created=tuple(r["email"] for r in inserted),
        updated=tuple(updated),
        deactivated=tuple(deactivated),
        unchanged=unchanged,
        held=tuple(sorted(keep_emails & set(known))),
        suppressed=tuple(suppressed),
        moved=tuple(sorted(moved)),
        failed=tuple(sorted(failed)),
    )


def live_sources(session: Session, emails: Collection[str]) -> dict[str, str | None]:
    """The file each live (not deleted) subscriber of ``emails`` was synced from."""
    rows = session.execute(
        select(Subscriber.email, Subscriber.source_file).where(
            Subscriber.email.in_(list(emails)), Subscriber.deleted_at.is_(None)
        )
    )
    return {email: source for email, source in rows}


def _refuse_mass_deactivation(count: int, current: int, share: float) -> None:
    if count == 0:
        return
    if count >= current:
        raise SyncRefused(
            f"refusing to deactivate all {current} subscribers: is subscribers_dir empty, "
            "unmounted or wrong? (--allow-mass-deactivation to do it anyway)"
        )
    if count > 1 and count > share * current:
        raise SyncRefused(
            f"refusing to deactivate {count} of {current} subscribers at once "
            f"(more than newsletter.max_deactivate_share = {share:.0%}); "
            "--allow-mass-deactivation to do it anyway"
        )


def _apply_rows(
    session: Session, stmt: Any, rows: list[dict[str, Any]], failed: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """Run a bulk insert or update; if the database refuses it, row by row, each in a
    savepoint, so one bad profile never blocks the rest. Returns the rows applied."""
    if not rows:
        return []
    try:
        with session.begin_nested():
            session.execute(stmt, rows)
        return rows
    except (SQLAlchemyError, OverflowError):
        pass
    done: list[dict[str, Any]] = []
    for row in rows:
        try:
            with session.begin_nested():
                session.execute(stmt, [row])
            done.append(row)
        except (SQLAlchemyError, OverflowError) as e:
            message = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
            failed.append((row["source_file"] or "", row["email"], f"database error: {message}"))
    return done


def _suppressed_among(session: Session, emails: Sequence[str]) -> set[str]:
    """Which of these addresses are unsubscribed: one query, driven by the (short)
    suppression list."""
    by_email = select(Subscriber.email).join(Suppression, Suppression.email == Subscriber.email)
    by_id = select(Subscriber.email).join(Suppression, Suppression.subscriber_id == Subscriber.id)
    return set(session.scalars(by_email.union(by_id))) & set(emails)


# -- reading ---------------------------------------------------------------------------


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
