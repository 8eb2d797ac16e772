"""Subscribers: the bulk sync from YAML profiles (reading them back: :mod:`.subscriber_reads`).

A sync reads every subscriber once, then inserts, updates and deactivates in bulk
(a handful of statements for 10,000 profiles). It never touches ``suppressions``:
an unsubscribe always wins over ``active: true`` in YAML. Whether mail may go out is
"effectively active": active in YAML, its profile still present, and not suppressed
(:func:`newsletter.db.suppressions.deliverable_clauses`, the rule the outbox uses too).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.db.core import chunks
from newsletter.domain import Keyword, Profile
from newsletter.errors import SyncRefused
from newsletter.models import Subscriber, Suppression

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
    # Counted once: comparing each new row with every other was quadratic (hours at 100k).
    came = Counter(i["source_file"] for i in inserted)
    for r in inserted:
        gone = gone_by_file.get(r["source_file"] or "")
        if gone and len(gone) == 1 and came[r["source_file"]] == 1:
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
