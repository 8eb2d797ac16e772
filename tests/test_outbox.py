"""The outbox state machine and leases, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from newsletter.db import outbox, session_scope
from newsletter.db.leases import SCHEDULER_LEASE, acquire, holder_is_dead, holder_of, release
from newsletter.db.outbox import admin as outbox_admin
from newsletter.db.outbox import plan as outbox_plan
from newsletter.db.outbox.bulk import SentMark, SkippedMark, mark_sent_many, mark_skipped_many
from newsletter.errors import DatabaseError
from newsletter.models import Suppression
from tests.support.sending import (
    add_entries,
    add_subscribers,
    digest_entry_ids,
    digests,
    sent_entry_ids,
    utc,
)

NOW = utc(2026, 6, 15, 8, 0)
LEASE = timedelta(minutes=5)


def dead_worker_id() -> str:
    """The id a worker on this host had, whose process has exited."""
    import socket

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{socket.gethostname()[:60]}:{proc.stdout.strip()}:deadbeef"


def claim(engine: Engine, worker: str, *, now=NOW, limit: int = 100) -> list[outbox.Claim]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        return outbox.claim_batch(s, worker, now=now, limit=limit, lease=LEASE)


def test_ensure_digests_is_idempotent_per_subscriber_and_period(engine: Engine) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    with session_scope(engine) as s:
        assert outbox_plan.ensure_digests(s, [(a, "2026-06-15"), (b, "2026-06-15")], now=NOW) == 2
    with session_scope(engine) as s:
        assert outbox_plan.ensure_digests(s, [(a, "2026-06-15"), (b, "2026-06-15")], now=NOW) == 0
    assert [(d.subscriber_id, d.period, d.status) for d in digests(engine)] == [
        (a, "2026-06-15", "pending"),
        (b, "2026-06-15", "pending"),
    ]


def test_a_new_period_supersedes_an_unsent_older_one(engine: Engine) -> None:
    (a,) = add_subscribers(engine, ["a@example.org"])
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-14")], now=NOW)
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15")], now=NOW)
    old, new = digests(engine)
    assert (old.status, old.error) == (
        "skipped",
        "superseded by the digest of 2026-06-15, which carries its entries",
    )
    assert new.status == "pending"


def test_claims_are_disjoint_and_leased(engine: Engine) -> None:
    ids = add_subscribers(engine, [f"s{i}@example.org" for i in range(5)])
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(i, "2026-06-15") for i in ids], now=NOW)
    first = claim(engine, "w1", limit=3)
    second = claim(engine, "w2", limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {c.id for c in first} & {c.id for c in second}
    assert claim(engine, "w3") == []  # everything is leased
    # After the lease expires, anyone may take them.
    assert len(claim(engine, "w3", now=NOW + LEASE + timedelta(seconds=1))) == 5


def test_a_dead_holders_claims_are_free_at_once(engine: Engine) -> None:
    (a,) = add_subscribers(engine, ["a@example.org"])
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15")], now=NOW)
    dead = dead_worker_id()
    assert holder_is_dead(dead)
    assert len(claim(engine, dead)) == 1
    assert len(claim(engine, "w-alive")) == 1  # no waiting for the lease to run out


def test_concurrent_claimers_never_share_a_row(engine: Engine) -> None:
    ids = add_subscribers(engine, [f"c{i}@example.org" for i in range(60)])
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(i, "2026-06-15") for i in ids], now=NOW)
    got: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def work(name: str) -> None:
        barrier.wait()
        mine: list[int] = []
        while batch := claim(engine, name, limit=4):
            mine.extend(c.id for c in batch)
        got[name] = mine

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [i for ids_ in got.values() for i in ids_]
    assert len(everything) == 60 == len(set(everything))


def _sending(engine: Engine, worker: str, digest_id: int, sid: int, entries: list[int]) -> str:
    with session_scope(engine) as s:
        return outbox.mark_sending(
            s,
            digest_id,
            worker,
            subscriber_id=sid,
            subject="Digest",
            message_id="<m@x>",
            window_start=NOW - timedelta(days=1),
            window_end=NOW,
            entries=[(e, 1.0) for e in entries],
            lease_until=NOW + LEASE,
        )


def test_full_lifecycle_and_compare_and_set(engine: Engine) -> None:
    (a,) = add_subscribers(engine, ["a@example.org"])
    e1, e2 = add_entries(
        engine, ["Bilevel optimization", "Preference optimization"], first_seen=NOW
    )
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15")], now=NOW)
    [c] = claim(engine, "w1")
    assert _sending(engine, "intruder", c.id, a, [e1, e2]) == "lost"
    assert _sending(engine, "w1", c.id, a, [e1, e2]) == "ok"
    assert digest_entry_ids(engine, c.id) == [e1, e2]
    with session_scope(engine) as s:
        assert mark_sent_many(s, "intruder", [SentMark(c.id, "250", NOW)]) == set()
        assert mark_sent_many(s, "w1", [SentMark(c.id, "250 2.0.0 Ok: queued", NOW)]) == {c.id}
    [d] = digests(engine)
    assert (d.status, d.attempts, d.n_entries, d.smtp_reply) == (
        "sent",
        1,
        2,
        "250 2.0.0 Ok: queued",
    )
    assert d.lease_until is None and d.sent_at == NOW
    with session_scope(engine) as s:
        assert outbox_plan.last_windows(s, [a]) == {a: NOW}
        assert sent_entry_ids(s, [a]) == {a: {e1, e2}}


def test_an_entry_already_sent_makes_a_draft_stale(engine: Engine) -> None:
    (a,) = add_subscribers(engine, ["a@example.org"])
    (e1,) = add_entries(engine, ["Bilevel optimization"], first_seen=NOW)
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-14"), (a, "2026-06-15")], now=NOW)
    # Both rows exist only if the older one was claimed before the newer was planned;
    # force that state to check the guard.
    d1, d2 = digests(engine)
    with session_scope(engine) as s:
        s.get(type(d1), d1.id).status = "pending"  # type: ignore[union-attr]
        s.get(type(d1), d1.id).error = None  # type: ignore[union-attr]
    claims = claim(engine, "w1")
    assert {c.id for c in claims} == {d1.id, d2.id}
    assert _sending(engine, "w1", d1.id, a, [e1]) == "ok"
    with session_scope(engine) as s:
        result = outbox.mark_sending(
            s, d2.id, "w1", subscriber_id=a, subject="x", message_id="<y>",
            window_start=None, window_end=NOW, entries=[(e1, 1.0)], lease_until=NOW + LEASE,
        )  # fmt: skip
        assert result == "stale"
        s.rollback()
    assert [d.status for d in digests(engine)] == ["sending", "pending"]


def test_temporary_and_permanent_failures_free_the_entries(engine: Engine) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    (e1,) = add_entries(engine, ["Bilevel optimization"], first_seen=NOW)
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15"), (b, "2026-06-15")], now=NOW)
    ca, cb = claim(engine, "w1")
    assert _sending(engine, "w1", ca.id, a, [e1]) == "ok"
    assert _sending(engine, "w1", cb.id, b, [e1]) == "ok"
    retry_at = NOW + timedelta(seconds=30)
    with session_scope(engine) as s:
        assert outbox.reschedule(s, ca.id, "w1", error="451 try later", next_attempt_at=retry_at)
        assert outbox.mark_failed(s, cb.id, "w1", error="550 no such user")
    da, db = digests(engine)
    assert (da.status, da.attempts, da.next_attempt_at, da.claimed_by) == (
        "pending",
        1,
        retry_at,
        None,
    )
    assert (db.status, db.attempts, db.error) == ("failed", 1, "550 no such user")
    assert digest_entry_ids(engine, da.id) == digest_entry_ids(engine, db.id) == []
    # Not claimable before its retry time, claimable after.
    assert claim(engine, "w2") == []
    with session_scope(engine) as s:
        assert outbox.next_retry_at(s, now=NOW) == retry_at
    assert [c.id for c in claim(engine, "w2", now=retry_at)] == [da.id]
    with session_scope(engine) as s:
        # Leased by w2 now: nothing for another worker to wait for.
        assert outbox.next_retry_at(s, now=retry_at) is None
        # A failed digest does not move the window: its entries come in the next one.
        assert outbox_plan.last_windows(s, [a, b]) == {}
        assert outbox_admin.counts(s) == {
            "pending": 1,
            "sending": 0,
            "sent": 0,
            "failed": 1,
            "skipped": 0,
        }


def test_skipped_moves_the_window(engine: Engine) -> None:
    (a,) = add_subscribers(engine, ["a@example.org"])
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15")], now=NOW)
    [c] = claim(engine, "w1")
    with session_scope(engine) as s:
        mark_skipped_many(s, "w1", [SkippedMark(c.id, NOW - timedelta(days=1), NOW)])
    [d] = digests(engine)
    assert d.status == "skipped"
    with session_scope(engine) as s:
        assert outbox_plan.last_windows(s, [a]) == {a: NOW}


def test_ambiguous_rows_and_settling_them(engine: Engine) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    (e1,) = add_entries(engine, ["Bilevel optimization"], first_seen=NOW)
    dead = dead_worker_id()
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15"), (b, "2026-06-15")], now=NOW)
    ca, cb = claim(engine, dead)
    assert _sending(engine, dead, ca.id, a, [e1]) == "ok"  # then "killed"
    claim_live = claim(engine, "live-worker")  # b's row is free again (dead holder)
    assert [c.id for c in claim_live] == [cb.id]
    assert _sending(engine, "live-worker", cb.id, b, [e1]) == "ok"
    with session_scope(engine) as s:
        rows = {d.id: d for d in outbox_admin.ambiguous(s, now=NOW)}
    assert not rows[ca.id].in_flight  # its process is gone
    # live-worker's id is not host:pid shaped, so it is presumed alive until the lease ends.
    assert rows[cb.id].in_flight
    with session_scope(engine) as s, pytest.raises(DatabaseError, match="being sent right now"):
        outbox_admin.settle(s, cb.id, "send-again", now=NOW)
    with session_scope(engine) as s:
        info = outbox_admin.settle(s, ca.id, "send-again", now=NOW)
    assert (info.status, info.attempts, info.claimed_by) == ("pending", 0, None)
    assert digest_entry_ids(engine, ca.id) == []
    with session_scope(engine) as s:
        info = outbox_admin.settle(s, cb.id, "mark-sent", now=NOW + LEASE + timedelta(seconds=1))
    assert info.status == "sent" and "operator" in (info.smtp_reply or "")
    assert digest_entry_ids(engine, cb.id) == [e1]  # what it held counts as delivered
    with session_scope(engine) as s, pytest.raises(DatabaseError, match="is sent"):
        outbox_admin.settle(s, cb.id, "send-again", now=NOW)
    with session_scope(engine) as s, pytest.raises(DatabaseError, match="no digest"):
        outbox_admin.settle(s, 9999, "mark-sent", now=NOW)


def test_schedule_rows_leave_out_the_unreachable(engine: Engine) -> None:
    ids = add_subscribers(
        engine, ["ok@example.org", "off@example.org", "unsub@example.org", "gone@example.org"]
    )
    with session_scope(engine) as s:
        from newsletter.models import Subscriber

        s.get(Subscriber, ids[1]).active = False  # type: ignore[union-attr]
        s.get(Subscriber, ids[3]).deleted_at = NOW  # type: ignore[union-attr]
        s.add(Suppression(email="unsub@example.org", subscriber_id=ids[2], source="one-click"))
    with session_scope(engine) as s:
        assert [r.email for r in outbox_plan.schedule_rows(s)] == ["ok@example.org"]
        assert [r.email for r in outbox_plan.schedule_rows(s, emails=["OK@example.org"])] == [
            "ok@example.org"
        ]
        assert outbox_plan.deliverable_ids(s, ids) == {ids[0]}


def test_scheduler_lease_has_one_holder(engine: Engine) -> None:
    ttl = timedelta(minutes=3)
    with session_scope(engine) as s:
        assert acquire(s, SCHEDULER_LEASE, "A", now=NOW, ttl=ttl)
    with session_scope(engine) as s:
        assert not acquire(s, SCHEDULER_LEASE, "B", now=NOW + timedelta(minutes=1), ttl=ttl)
        assert acquire(s, SCHEDULER_LEASE, "A", now=NOW + timedelta(minutes=2), ttl=ttl)  # renew
    with session_scope(engine) as s:
        assert not acquire(s, SCHEDULER_LEASE, "B", now=NOW + timedelta(minutes=4), ttl=ttl)
        lease = holder_of(s, SCHEDULER_LEASE, now=NOW + timedelta(minutes=4))
        assert lease is not None and lease.holder == "A"
        assert acquire(s, SCHEDULER_LEASE, "B", now=NOW + timedelta(minutes=6), ttl=ttl)  # expired
    with session_scope(engine) as s:
        release(s, SCHEDULER_LEASE, "A")  # not A's any more: no effect
        assert not acquire(s, SCHEDULER_LEASE, "A", now=NOW + timedelta(minutes=7), ttl=ttl)
        release(s, SCHEDULER_LEASE, "B")
        assert acquire(s, SCHEDULER_LEASE, "A", now=NOW + timedelta(minutes=7), ttl=ttl)


def test_a_dead_schedulers_lease_is_taken_over_at_once(engine: Engine) -> None:
    dead = dead_worker_id()
    with session_scope(engine) as s:
        assert acquire(s, SCHEDULER_LEASE, dead, now=NOW, ttl=timedelta(hours=1))
    with session_scope(engine) as s:
        assert acquire(
            s, SCHEDULER_LEASE, "B", now=NOW + timedelta(seconds=1), ttl=timedelta(hours=1)
        )
