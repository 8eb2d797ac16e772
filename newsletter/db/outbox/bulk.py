"""Several outbox transitions in one transaction, for group commit.

A send marks every digest ``sending`` before its DATA and ``sent`` after it. One
transaction per mark caps a run at a few hundred messages a second, so the send
pipeline gathers the marks its connections ask for at the same moment and writes them
together (:mod:`newsletter.pipeline.group_commit`). Each function here gives every item
the result it would have had alone (``mark_sending_many`` the result of
:func:`~newsletter.db.outbox.transitions.mark_sending` for each), in a fixed number of
statements per group. ``sending -> sent`` and ``pending -> skipped`` exist only here:
the send pipeline always writes them in groups; so does ``sending -> pending`` for a
message that never left (:func:`unmark_sending`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from newsletter.db.core import chunks
from newsletter.db.outbox.transitions import PENDING, SENDING, SENT, SKIPPED, MarkResult
from newsletter.models import Digest, DigestEntry


@dataclass(frozen=True, slots=True)
class SendingMark:
    """What :func:`newsletter.db.outbox.transitions.mark_sending` records for one digest."""

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


def _table(model: type[Digest] | type[DigestEntry]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@cache
def _statements(dialect: str) -> dict[str, Any]:
    """Core statements built once: a group runs each of them once, with its parameters.

    Building an ORM statement costs more than running it on SQLite; these are built
    once per process and reach the driver through Core's compiled cache.
    """
    d, de = _table(Digest), _table(DigestEntry)
    from sqlalchemy.dialects import postgresql, sqlite  # on first use, as in ``db.core``

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    held = select(d.c.id).where(
        d.c.id.in_(bindparam("ids", expanding=True)),
        d.c.status == bindparam("status"),
        d.c.claimed_by == bindparam("worker"),
    )
    sending: dict[str, Any] = {
        "status": SENDING,
        "subject": bindparam("b_subject"),
        "message_id": bindparam("b_message_id"),
        "n_entries": bindparam("b_n"),
        "window_start": bindparam("b_start"),
        "window_end": bindparam("b_end"),
        "lease_until": bindparam("b_lease"),
        "error": None,
    }
    sent: dict[str, Any] = {
        "status": SENT,
        "smtp_reply": bindparam("b_reply"),
        "sent_at": bindparam("b_at"),
        "attempts": d.c.attempts + 1,
        "lease_until": None,
        "next_attempt_at": None,
        "error": None,
    }
    # One query for both kinds of a group's marks: "sending" wants them pending, "sent"
    # wants them sending (a group's two id lists never share an id).
    held_both = select(d.c.id, d.c.status).where(
        d.c.id.in_(bindparam("ids", expanding=True)),
        d.c.status.in_([PENDING, SENDING]),
        d.c.claimed_by == bindparam("worker"),
    )
    return {
        "held": held.with_for_update() if dialect == "postgresql" else held,
        "held_both": held_both.with_for_update() if dialect == "postgresql" else held_both,
        "entries": insert(de)
        .on_conflict_do_nothing(index_elements=["subscriber_id", "entry_id"])
        .returning(de.c.id),
        "taken": select(de.c.subscriber_id, de.c.entry_id, de.c.digest_id).where(
            de.c.subscriber_id.in_(bindparam("subscribers", expanding=True)),
            de.c.entry_id.in_(bindparam("entries", expanding=True)),
        ),
        "forget": delete(de).where(de.c.digest_id.in_(bindparam("ids", expanding=True))),
        "sending": update(d).where(d.c.id == bindparam("b_id")).values(**sending),
        # The same, only where the row is still pending and ours: the group's check
        # and its write in one statement (``mark_group``).
        "sending_ours": update(d)
        .where(
            d.c.id == bindparam("b_id"),
            d.c.status == PENDING,
            d.c.claimed_by == bindparam("b_worker"),
        )
        .values(**sending),
        "skipped": update(d)
        .where(
            d.c.id == bindparam("b_id"),
            d.c.status == PENDING,
            d.c.claimed_by == bindparam("b_worker"),
        )
        .values(
            status=SKIPPED,
            window_start=bindparam("b_start"),
            window_end=bindparam("b_end"),
            n_entries=0,
            lease_until=None,
            error=None,
        ),
        "unmark": update(d)
        .where(
            d.c.id.in_(bindparam("ids", expanding=True)),
            d.c.status == SENDING,
            d.c.claimed_by == bindparam("worker"),
        )
        .values(status=PENDING, error=None)
        .returning(d.c.id),
        "sent": update(d).where(d.c.id == bindparam("b_id")).values(**sent),
        "sent_ours": update(d)
        .where(
            d.c.id == bindparam("b_id"),
            d.c.status == SENDING,
            d.c.claimed_by == bindparam("b_worker"),
        )
        .values(**sent),
    }


def _run(session: Session) -> tuple[Connection, dict[str, Any]]:
    conn = session.connection()
    return conn, _statements(conn.dialect.name)


def _held(session: Session, worker: str, ids: Sequence[int], status: str) -> set[int]:
    conn, stmts = _run(session)
    held: set[int] = set()
    for chunk in chunks(list(ids)):
        rows = conn.execute(stmts["held"], {"ids": list(chunk), "status": status, "worker": worker})
        held.update(r[0] for r in rows)
    return held


def held_for_group(
    session: Session, worker: str, sending: Sequence[int], sent: Sequence[int]
) -> tuple[set[int], set[int]]:
    """(ids of ``sending`` still pending and ours, ids of ``sent`` still sending and ours)
    in one query instead of two: what :func:`mark_sending_many` and
    :func:`mark_sent_many` are given as ``held`` by a group commit."""
    conn, stmts = _run(session)
    wanted = {PENDING: set(sending), SENDING: set(sent)}
    if wanted[PENDING] & wanted[SENDING]:
        raise ValueError("a digest cannot be marked sending and sent in one group")
    found: dict[str, set[int]] = {PENDING: set(), SENDING: set()}
    for chunk in chunks([*sending, *sent]):
        rows = conn.execute(stmts["held_both"], {"ids": list(chunk), "worker": worker})
        for digest_id, status in rows:
            if digest_id in wanted[status]:
                found[status].add(digest_id)
    return found[PENDING], found[SENDING]


def _taken(session: Session, marks: Sequence[SendingMark]) -> set[tuple[int, int]]:
    """(subscriber, entry) pairs already in a digest other than the one being marked."""
    conn, stmts = _run(session)
    ours = {m.digest_id for m in marks}
    wanted = {(m.subscriber_id, e) for m in marks for e, _ in m.entries}
    entry_ids = sorted({e for _, e in wanted})
    taken: set[tuple[int, int]] = set()
    if not entry_ids:
        return taken
    for chunk in chunks(sorted({m.subscriber_id for m in marks})):
        rows = conn.execute(stmts["taken"], {"subscribers": list(chunk), "entries": entry_ids})
        taken.update(
            (sid, eid) for sid, eid, did in rows if did not in ours and (sid, eid) in wanted
        )
    return taken


def mark_sending_many(
    session: Session,
    worker: str,
    marks: Sequence[SendingMark],
    *,
    held: set[int] | None = None,
) -> dict[int, MarkResult]:
    """``mark_sending`` for each of ``marks``: digest id -> "ok", "lost" or "stale".

    Only the "ok" ones are changed. Two marks of one group that carry the same entry
    for the same subscriber: the first wins, the second is stale (as if it came
    second). Raises :class:`GroupConflict` if a concurrent transaction inserted one of
    the entries after the check; the caller must roll back. ``held``: the ids still
    pending and ours, when the caller already read them (:func:`held_for_group`).
    """
    if not marks:
        return {}
    if held is None:
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
    conn, stmts = _run(session)
    for chunk in chunks([m.digest_id for m in ok]):
        conn.execute(stmts["forget"], {"ids": list(chunk)})
    conn.execute(stmts["sending"], _sending_params(ok, worker))
    rows = _entry_rows(ok)
    inserted = 0
    if rows:
        # One statement, many parameter sets: compiled once and cached, where a
        # multi-row VALUES would be compiled again for every group.
        inserted = len(conn.execute(stmts["entries"], rows).all())
    if inserted != len(rows):
        raise GroupConflict(f"{len(rows) - inserted} entries were taken meanwhile")
    return results


def mark_sent_many(
    session: Session, worker: str, marks: Sequence[SentMark], *, held: set[int] | None = None
) -> set[int]:
    """``sending`` -> ``sent`` for each of ``marks`` (the server accepted the message);
    the ids that were still ``sending`` and ours (``held``, when the caller read them)."""
    if not marks:
        return set()
    if held is None:
        held = _held(session, worker, [m.digest_id for m in marks], SENDING)
    todo = [m for m in marks if m.digest_id in held]
    if todo:
        conn, stmts = _run(session)
        conn.execute(stmts["sent"], _sent_params(todo, worker))
    return {m.digest_id for m in todo}


def _sending_params(marks: Sequence[SendingMark], worker: str) -> list[dict[str, Any]]:
    return [
        {
            "b_id": m.digest_id,
            "b_worker": worker,
            "b_subject": m.subject,
            "b_message_id": m.message_id,
            "b_n": len(m.entries),
            "b_start": m.window_start,
            "b_end": m.window_end,
            "b_lease": m.lease_until,
        }
        for m in marks
    ]


def _sent_params(marks: Sequence[SentMark], worker: str) -> list[dict[str, Any]]:
    return [
        {"b_id": m.digest_id, "b_worker": worker, "b_reply": m.reply[:2000], "b_at": m.at}
        for m in marks
    ]


def _entry_rows(marks: Sequence[SendingMark]) -> list[dict[str, Any]]:
    return [
        {
            "digest_id": m.digest_id,
            "subscriber_id": m.subscriber_id,
            "entry_id": eid,
            "score": score,
            "rank": rank,
        }
        for m in marks
        for rank, (eid, score) in enumerate(m.entries, start=1)
    ]


def mark_group(
    session: Session, worker: str, marks: Sequence[SendingMark], sent: Sequence[SentMark]
) -> tuple[dict[int, MarkResult], set[int]] | None:
    """A group commit's marks in four statements when each will succeed: every
    ``sending`` mark's row still pending and ours, none of its entries in another digest
    of the subscriber, every ``sent`` mark's row still sending and ours. Then what
    :func:`mark_sending_many` and :func:`mark_sent_many` would have returned (all "ok",
    all recorded); else None, and the caller must roll back and mark them those ways.

    The checks are the writes' own outcomes (compare-and-set rowcounts, the entries'
    ``ON CONFLICT DO NOTHING``), not two queries before them.
    """
    conn, stmts = _run(session)
    if not conn.dialect.supports_sane_multi_rowcount:
        return None
    ids, done = [m.digest_id for m in marks], [m.digest_id for m in sent]
    pairs = {(m.subscriber_id, e) for m in marks for e, _ in m.entries}
    if (
        len(pairs) != sum(len(m.entries) for m in marks)  # an entry twice: one is stale
        or len({*ids, *done}) != len(ids) + len(done)
    ):
        return None
    if sent and conn.execute(stmts["sent_ours"], _sent_params(sent, worker)).rowcount != len(sent):
        return None
    if marks:
        for chunk in chunks(ids):
            conn.execute(stmts["forget"], {"ids": list(chunk)})
        changed = conn.execute(stmts["sending_ours"], _sending_params(marks, worker)).rowcount
        if changed != len(marks):
            return None
        rows = _entry_rows(marks)
        if rows and len(conn.execute(stmts["entries"], rows).all()) != len(rows):
            return None
    return dict.fromkeys(ids, "ok"), set(done)


def unmark_sending(session: Session, worker: str, ids: Sequence[int]) -> set[int]:
    """``sending`` -> ``pending`` (still claimed by ``worker``, no attempt charged) for
    digests marked whose message certainly did not leave: the server became unusable
    before any of it was sent (a pipelined MAIL refused for want of authentication, a
    reconnect that failed). Their entries are free again; the ids that were changed."""
    if not ids:
        return set()
    conn, stmts = _run(session)
    done: set[int] = set()
    for chunk in chunks(list(ids)):
        rows = conn.execute(stmts["unmark"], {"ids": list(chunk), "worker": worker})
        done.update(r[0] for r in rows)
    for chunk in chunks(sorted(done)):
        conn.execute(stmts["forget"], {"ids": list(chunk)})
    return done


@dataclass(frozen=True, slots=True)
class SkippedMark:
    digest_id: int
    window_start: datetime | None
    window_end: datetime


def mark_skipped_many(session: Session, worker: str, marks: Sequence[SkippedMark]) -> None:
    """``pending`` -> ``skipped`` for each of ``marks`` that is still ours: nothing new
    for that period (or the subscriber left), so no email; the window still moves."""
    if marks:
        conn, stmts = _run(session)
        conn.execute(
            stmts["skipped"],
            [
                {
                    "b_id": m.digest_id,
                    "b_worker": worker,
                    "b_start": m.window_start,
                    "b_end": m.window_end,
                }
                for m in marks
            ],
        )
