"""Outbox marks written in groups give each digest the result it would get alone."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from newsletter.db import outbox, session_scope
from newsletter.db.core import connect, reader_engine
from newsletter.db.outbox import plan as outbox_plan
from newsletter.db.outbox.bulk import (
    SendingMark,
    SentMark,
    SkippedMark,
    held_for_group,
    mark_group,
    mark_sending_many,
    mark_sent_many,
    mark_skipped_many,
)
from newsletter.pipeline.group_commit import OutboxMarks
from tests.support.sending import add_entries, add_subscribers, digest_entry_ids, digests, utc

NOW = utc(2026, 6, 15, 8, 0)
LEASE = timedelta(minutes=5)


def _claims(engine: Engine, subscribers: list[int], period: str = "2026-06-15") -> list[int]:
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(sid, period) for sid in subscribers], now=NOW)
    with session_scope(engine) as s:
        return [c.id for c in outbox.claim_batch(s, "w1", now=NOW, limit=1000, lease=LEASE)]


def _mark(digest_id: int, sid: int, entries: list[int]) -> SendingMark:
    return SendingMark(
        digest_id=digest_id,
        subscriber_id=sid,
        subject=f"Digest {digest_id}",
        message_id=f"<{digest_id}@x>",
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        entries=tuple((e, 2.0) for e in entries),
        lease_until=NOW + LEASE,
    )


def test_a_group_of_sending_marks_is_each_marks_own_result(engine: Engine) -> None:
    a, b, c, d = add_subscribers(engine, [f"{x}@example.org" for x in "abcd"])
    e1, e2, e3 = add_entries(engine, ["Bilevel", "Preference", "Diffusion"], first_seen=NOW)
    da, db, dc, dd = _claims(engine, [a, b, c, d])
    # d's digest had a first attempt with e1, which failed for now.
    with session_scope(engine) as s:
        assert outbox.mark_sending(
            s, dd, "w1", subscriber_id=d, subject="old", message_id="<old>",
            window_start=None, window_end=NOW, entries=[(e1, 1.0)], lease_until=NOW + LEASE,
        ) == "ok"  # fmt: skip
    with session_scope(engine) as s:
        # Back to pending under a new claim, as a retried digest would be.
        outbox.reschedule(s, dd, "w1", error="451", next_attempt_at=NOW)
    with session_scope(engine) as s:
        [again] = outbox.claim_batch(s, "w1", now=NOW, limit=10, lease=LEASE)
    assert again.id == dd
    with session_scope(engine) as s:
        got = mark_sending_many(
            s,
            "w1",
            [
                _mark(da, a, [e1, e2]),
                _mark(db, b, [e1, e3]),  # another subscriber: e1 is fine
                _mark(dc, c, []),
                _mark(dd, d, [e2]),
                _mark(10_000, a, [e3]),  # not a digest this worker holds
            ],
        )
    assert got == {da: "ok", db: "ok", dc: "ok", dd: "ok", 10_000: "lost"}
    rows = {x.id: x for x in digests(engine)}
    assert [rows[i].status for i in (da, db, dc, dd)] == ["sending"] * 4
    assert (rows[da].subject, rows[da].message_id, rows[da].n_entries) == (
        f"Digest {da}",
        f"<{da}@x>",
        2,
    )
    assert rows[da].window_end == NOW and rows[da].lease_until == NOW + LEASE
    assert digest_entry_ids(engine, da) == [e1, e2]
    assert digest_entry_ids(engine, dd) == [e2]  # not e1, its failed attempt's


def test_stale_marks_change_nothing_and_the_first_of_two_wins(engine: Engine) -> None:
    (a,) = add_subscribers(engine, ["a@example.org"])
    e1, e2 = add_entries(engine, ["Bilevel", "Preference"], first_seen=NOW)
    (yesterday,) = _claims(engine, [a], "2026-06-14")
    with session_scope(engine) as s:
        assert mark_sending_many(s, "w1", [_mark(yesterday, a, [e1])]) == {yesterday: "ok"}
    (today,) = _claims(engine, [a], "2026-06-15")
    with session_scope(engine) as s:
        # e1 went out yesterday: today's digest is stale, and stays as it was.
        assert mark_sending_many(s, "w1", [_mark(today, a, [e1, e2])]) == {today: "stale"}
    row = {x.id: x for x in digests(engine)}[today]
    assert (row.status, row.subject, row.n_entries) == ("pending", None, 0)
    assert digest_entry_ids(engine, today) == []


def test_sent_marks_only_move_our_sending_rows(engine: Engine) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    (e1,) = add_entries(engine, ["Bilevel"], first_seen=NOW)
    da, db = _claims(engine, [a, b])
    with session_scope(engine) as s:
        mark_sending_many(s, "w1", [_mark(da, a, [e1])])
    with session_scope(engine) as s:
        done = mark_sent_many(s, "w1", [SentMark(da, "250 ok", NOW), SentMark(db, "250 ok", NOW)])
        assert mark_sent_many(s, "intruder", [SentMark(da, "250", NOW)]) == set()
    assert done == {da}  # db was never marked sending
    rows = {x.id: x for x in digests(engine)}
    assert (rows[da].status, rows[da].smtp_reply, rows[da].attempts) == ("sent", "250 ok", 1)
    assert (rows[da].lease_until, rows[da].sent_at) == (None, NOW)
    assert rows[db].status == "pending"


class _SlowFirstWrite(OutboxMarks):
    """The first transaction waits until told, so the other connections queue behind it."""

    def __init__(self, engine: Engine, worker: str) -> None:
        super().__init__(engine, worker)
        self.release = threading.Event()
        self.groups: list[int] = []

    def _write(self, marks, sent):  # type: ignore[no-untyped-def]
        self.groups.append(len(marks))
        if len(self.groups) == 1:
            assert self.release.wait(30)
        return super()._write(marks, sent)


def test_marks_that_arrive_during_a_commit_share_the_next_one(engine: Engine) -> None:
    n = 9
    subs = add_subscribers(engine, [f"s{i}@example.org" for i in range(n)])
    (e1,) = add_entries(engine, ["Bilevel"], first_seen=NOW)
    ids = _claims(engine, subs)
    marks = _SlowFirstWrite(engine, "w1")
    results: dict[int, str] = {}

    def connection(i: int) -> None:
        results[ids[i]] = marks.sending(_mark(ids[i], subs[i], [e1]))
        marks.sent(SentMark(ids[i], "250 ok", NOW))

    first = threading.Thread(target=connection, args=(0,))
    first.start()
    while not marks.groups:  # the first connection is inside its transaction
        threading.Event().wait(0.01)
    others = [threading.Thread(target=connection, args=(i,)) for i in range(1, n)]
    for t in others:
        t.start()
    while len(marks._sending) < n - 1:  # all eight queued behind it
        threading.Event().wait(0.01)
    marks.release.set()
    for t in [first, *others]:
        t.join(30)
    assert results == dict.fromkeys(ids, "ok")
    assert marks.groups == [1, n - 1]  # two transactions for nine marks
    assert [d.status for d in digests(engine)] == ["sent"] + ["sending"] * (n - 1)
    marks.flush()  # the eight "sent" marks
    assert [d.status for d in digests(engine)] == ["sent"] * n
    assert marks.transactions == 3


def test_many_connections_all_get_their_results(engine: Engine) -> None:
    n = 40
    subs = add_subscribers(engine, [f"c{i}@example.org" for i in range(n)])
    (e1,) = add_entries(engine, ["Bilevel"], first_seen=NOW)
    ids = _claims(engine, subs)
    marks = OutboxMarks(engine, "w1")
    results: dict[int, str] = {}
    start = threading.Barrier(8)

    def connection(k: int) -> None:
        start.wait()
        for i in range(k, n, 8):
            results[ids[i]] = marks.sending(_mark(ids[i], subs[i], [e1]))
            marks.sent(SentMark(ids[i], "250 ok", NOW))

    threads = [threading.Thread(target=connection, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == dict.fromkeys(ids, "ok")
    marks.flush()
    assert [d.status for d in digests(engine)] == ["sent"] * n


def test_one_query_says_which_of_a_groups_marks_are_still_ours(engine: Engine) -> None:
    a, b, c, d = add_subscribers(engine, [f"{x}@example.org" for x in "abcd"])
    (e1,) = add_entries(engine, ["Bilevel"], first_seen=NOW)
    da, db, dc, dd = _claims(engine, [a, b, c, d])
    with session_scope(engine) as s:
        assert mark_sending_many(s, "w1", [_mark(da, a, [e1]), _mark(db, b, [])]) == {
            da: "ok",
            db: "ok",
        }
    with session_scope(engine) as s:
        # Sending wants pending rows, sent wants sending rows; both only this worker's.
        assert held_for_group(s, "w1", [dc, db], [da, dd]) == ({dc}, {da})
    with session_scope(engine) as s:
        assert held_for_group(s, "intruder", [dc], [da]) == (set(), set())
        with pytest.raises(ValueError):
            held_for_group(s, "w1", [dc], [dc])


def test_a_group_with_both_kinds_of_marks_writes_each_as_alone(engine: Engine) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    (e1,) = add_entries(engine, ["Bilevel"], first_seen=NOW)
    da, db = _claims(engine, [a, b])
    marks = OutboxMarks(engine, "w1")
    assert marks.sending(_mark(da, a, [e1])) == "ok"
    marks.sent(SentMark(da, "250 ok", NOW))
    marks.sent(SentMark(db, "250 ok", NOW))  # never marked sending: stays pending
    before = marks.transactions
    assert marks.sending(_mark(db, b, [e1])) == "ok"  # the same transaction as da's sent
    assert marks.transactions == before + 1
    rows = {x.id: x for x in digests(engine)}
    assert (rows[da].status, rows[da].smtp_reply, rows[da].attempts) == ("sent", "250 ok", 1)
    assert (rows[db].status, rows[db].smtp_reply, rows[db].attempts) == ("sending", None, 0)
    assert digest_entry_ids(engine, db) == [e1]


def test_a_sent_mark_waits_for_the_next_transaction_not_for_its_own(engine: Engine) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    (e1,) = add_entries(engine, ["Bilevel"], first_seen=NOW)
    da, db = _claims(engine, [a, b])
    marks = OutboxMarks(engine, "w1")
    assert marks.sending(_mark(da, a, [e1])) == "ok"
    marks.sent(SentMark(da, "250 ok", NOW))
    assert [d.status for d in digests(engine)] == ["sending", "pending"]
    assert marks.sending(_mark(db, b, [e1])) == "ok"  # carries da's "sent" along
    assert [d.status for d in digests(engine)] == ["sent", "sending"]
    assert marks.transactions == 2


def test_composing_reads_beside_the_writer_on_sqlite_files_only(tmp_path: Path) -> None:
    on_file = connect(f"sqlite:///{tmp_path / 'a.db'}")
    in_memory = connect("sqlite://")
    try:
        reader = reader_engine(on_file)
        assert reader is not None and reader is not on_file
        with session_scope(on_file) as writer:  # holds the write lock (BEGIN IMMEDIATE)
            writer.execute(text("CREATE TABLE t (x INTEGER)"))
            with Session(reader) as s:  # a reader does not wait for it
                assert s.execute(text("SELECT count(*) FROM digests")).scalar() == 0
        reader.dispose()
        assert reader_engine(in_memory) is None  # a second engine would see another database
    finally:
        on_file.dispose()
        in_memory.dispose()


def test_skipped_marks_only_move_our_pending_rows(engine: Engine) -> None:
    a, b, c = add_subscribers(engine, ["a@example.org", "b@example.org", "c@example.org"])
    (e1,) = add_entries(engine, ["Bilevel"], first_seen=NOW)
    da, db, dc = _claims(engine, [a, b, c])
    with session_scope(engine) as s:
        mark_sending_many(s, "w1", [_mark(dc, c, [e1])])  # already on its way
    start = NOW - timedelta(days=1)
    with session_scope(engine) as s:
        mark_skipped_many(s, "intruder", [SkippedMark(da, start, NOW)])
        mark_skipped_many(
            s,
            "w1",
            [SkippedMark(da, start, NOW), SkippedMark(db, None, NOW), SkippedMark(dc, None, NOW)],
        )
    rows = {x.id: x for x in digests(engine)}
    assert (rows[da].status, rows[da].window_start, rows[da].window_end) == ("skipped", start, NOW)
    assert (rows[db].status, rows[db].window_start, rows[db].lease_until) == ("skipped", None, None)
    assert rows[dc].status == "sending"


def _state(engine: Engine) -> list[tuple[object, ...]]:
    rows = digests(engine)
    return [(d.id, d.status, d.subject, d.smtp_reply, d.attempts) for d in rows] + [
        (d.id, *digest_entry_ids(engine, d.id)) for d in rows
    ]


def test_the_four_statement_group_writes_what_the_careful_way_writes(engine: Engine) -> None:
    a, b, c = add_subscribers(engine, ["a@example.org", "b@example.org", "c@example.org"])
    e1, e2 = add_entries(engine, ["Bilevel", "Preference"], first_seen=NOW)
    da, db, dc = _claims(engine, [a, b, c])
    with session_scope(engine) as s:
        assert mark_sending_many(s, "w1", [_mark(da, a, [e1])]) == {da: "ok"}
    with session_scope(engine) as s:
        got = mark_group(
            s, "w1", [_mark(db, b, [e1, e2]), _mark(dc, c, [])], [SentMark(da, "250 ok", NOW)]
        )
    assert got == ({db: "ok", dc: "ok"}, {da})
    rows = {x.id: x for x in digests(engine)}
    assert (rows[da].status, rows[da].smtp_reply, rows[da].attempts) == ("sent", "250 ok", 1)
    assert (rows[db].status, rows[db].n_entries) == ("sending", 2)
    assert (rows[db].subject, rows[db].lease_until) == (f"Digest {db}", NOW + LEASE)
    assert (rows[dc].status, rows[dc].n_entries) == ("sending", 0)
    assert digest_entry_ids(engine, db) == [e1, e2]


@pytest.mark.parametrize("case", ["lost", "stale", "twice", "sent-not-sending", "intruder"])
def test_a_group_with_a_mark_that_would_not_succeed_is_left_to_the_careful_way(
    engine: Engine, case: str
) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    e1, e2 = add_entries(engine, ["Bilevel", "Preference"], first_seen=NOW)
    (yesterday,) = _claims(engine, [a], "2026-06-14")
    with session_scope(engine) as s:
        assert mark_sending_many(s, "w1", [_mark(yesterday, a, [e1])]) == {yesterday: "ok"}
    da, db = _claims(engine, [a, b])
    marks, sent, worker = [_mark(db, b, [e2])], [SentMark(yesterday, "250 ok", NOW)], "w1"
    if case == "lost":
        marks.append(_mark(10_000, a, [e2]))
    elif case == "stale":  # e1 went out yesterday
        marks.append(_mark(da, a, [e1]))
    elif case == "twice":
        marks.append(_mark(da, b, [e2]))
    elif case == "sent-not-sending":
        sent.append(SentMark(da, "250 ok", NOW))
    else:
        worker = "intruder"
    before = _state(engine)
    with Session(engine) as s:
        assert mark_group(s, worker, marks, sent) is None
        s.rollback()
    assert _state(engine) == before
    # Through the group commit: the careful way gives each its own result.
    results = OutboxMarks(engine, worker)._write(marks, sent)
    expected = {"lost": "lost", "stale": "stale", "twice": "stale"}
    if case == "intruder":
        assert results == {db: "lost"}
    else:
        assert results[db] == "ok"
        assert all(results[m.digest_id] == expected[case] for m in marks[1:])
