"""Several outbox transitions in one transaction, for group commit.

A send marks every digest ``sending`` before its DATA and ``sent`` after it. One
transaction per mark caps a run at a few hundred messages a second, so the send
pipeline gathers the marks its connections ask for at the same moment and writes them
together (:mod:`newsletter.pipeline.group_commit`). Each function here gives every item
the result :func:`newsletter.db.outbox.mark_sending` / ``mark_sent`` would have given
it alone, in a fixed number of statements per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from newsletter.db.core import chunks
from newsletter.db.leases import dialect_insert
from newsletter.db.outbox import PENDING, SENDING, SENT, MarkResult
from newsletter.models import Digest, DigestEntry


@dataclass(frozen=True, slots=True)
class SendingMark:
    """What :func:`newsletter.db.outbox.mark_sending` records for one digest."""

    digest_id: int
    subscriber_id: int
    subject: str
    message_id: str
    window_start: datetime | None
    window_end: datetime
    entries: tuple[tuple[int, float], ...]  # (entry id, score), in rank order
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class SentMark:
    digest_id: int
    reply: str
    at: datetime


class GroupConflict(Exception):
    """Another transaction took an entry between the check and the insert (PostgreSQL).

    The caller rolls the group back and marks its items one by one instead.
    """


def _digests() -> Table:
    # Core's executemany UPDATE (one statement, many parameter sets) needs the table.
    table = Digest.__table__
    assert isinstance(table, Table)
    return table


def _held(session: Session, worker: str, ids: Sequence[int], status: str) -> set[int]:
    held: set[int] = set()
    for chunk in chunks(list(ids)):
        stmt = select(Digest.id).where(
            Digest.id.in_(chunk), Digest.status == status, Digest.claimed_by == worker
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        held.update(session.scalars(stmt))
    return held


def _taken(session: Session, marks: Sequence[SendingMark]) -> set[tuple[int, int]]:
    """(subscriber, entry) pairs already in a digest other than the one being marked."""
    ours = {m.digest_id for m in marks}
    wanted = {(m.subscriber_id, e) for m in marks for e, _ in m.entries}
    entry_ids = sorted({e for _, e in wanted})
    taken: set[tuple[int, int]] = set()
    for chunk in chunks(sorted({m.subscriber_id for m in marks})):
        rows = session.execute(
            select(DigestEntry.subscriber_id, DigestEntry.entry_id, DigestEntry.digest_id).where(
                DigestEntry.subscriber_id.in_(chunk), DigestEntry.entry_id.in_(entry_ids)
            )
        )
        taken.update(
            (r.subscriber_id, r.entry_id)
            for r in rows
            if r.digest_id not in ours and (r.subscriber_id, r.entry_id) in wanted
        )
    return taken


def mark_sending_many(
    session: Session, worker: str, marks: Sequence[SendingMark]
) -> dict[int, MarkResult]:
    """``mark_sending`` for each of ``marks``: digest id -> "ok", "lost" or "stale".

    Only the "ok" ones are changed. Two marks of one group that carry the same entry
    for the same subscriber: the first wins, the second is stale (as if it came
    second). Raises :class:`GroupConflict` if a concurrent transaction inserted one of
    the entries after the check; the caller must roll back.
    """
    if not marks:
        return {}
    held = _held(session, worker, [m.digest_id for m in marks], PENDING)
    results: dict[int, MarkResult] = {m.digest_id: "lost" for m in marks}
    live = [m for m in marks if m.digest_id in held]
    taken = _taken(session, live)
    ok: list[SendingMark] = []
    for m in live:
        pairs = [(m.subscriber_id, e) for e, _ in m.entries]
        if len(set(pairs)) != len(pairs) or any(p in taken for p in pairs):
            results[m.digest_id] = "stale"
            continue
        taken.update(pairs)
        results[m.digest_id] = "ok"
        ok.append(m)
    if not ok:
        return results
    ids = [m.digest_id for m in ok]
    for chunk in chunks(ids):
        session.execute(delete(DigestEntry).where(DigestEntry.digest_id.in_(chunk)))
    table = _digests()
    session.connection().execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=SENDING,
            subject=bindparam("b_subject"),
            message_id=bindparam("b_message_id"),
            n_entries=bindparam("b_n"),
            window_start=bindparam("b_start"),
            window_end=bindparam("b_end"),
            lease_until=bindparam("b_lease"),
            error=None,
        ),
        [
            {
                "b_id": m.digest_id,
                "b_subject": m.subject,
                "b_message_id": m.message_id,
                "b_n": len(m.entries),
                "b_start": m.window_start,
                "b_end": m.window_end,
                "b_lease": m.lease_until,
            }
            for m in ok
        ],
    )
    rows = [
        {
            "digest_id": m.digest_id,
            "subscriber_id": m.subscriber_id,
            "entry_id": eid,
            "score": score,
            "rank": rank,
        }
        for m in ok
        for rank, (eid, score) in enumerate(m.entries, start=1)
    ]
    inserted = 0
    for part in chunks(rows):
        inserted += len(
            session.execute(
                dialect_insert(session, DigestEntry)
                .values(list(part))
                .on_conflict_do_nothing(index_elements=["subscriber_id", "entry_id"])
                .returning(DigestEntry.id)
            ).all()
        )
    if inserted != len(rows):
        raise GroupConflict(f"{len(rows) - inserted} entries were taken meanwhile")
    return results


def mark_sent_many(session: Session, worker: str, marks: Sequence[SentMark]) -> set[int]:
    """``mark_sent`` for each of ``marks``; the ids that were still ``sending`` and ours."""
    if not marks:
        return set()
    held = _held(session, worker, [m.digest_id for m in marks], SENDING)
    todo = [m for m in marks if m.digest_id in held]
    if todo:
        table = _digests()
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=SENT,
                smtp_reply=bindparam("b_reply"),
                sent_at=bindparam("b_at"),
                attempts=table.c.attempts + 1,
                lease_until=None,
                next_attempt_at=None,
                error=None,
            ),
            [{"b_id": m.digest_id, "b_reply": m.reply[:2000], "b_at": m.at} for m in todo],
        )
    return {m.digest_id for m in todo}
