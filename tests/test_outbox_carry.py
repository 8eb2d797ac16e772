"""A digest that gives up its place hands its entries on: superseded while waiting for a
retry, or settled with ``resend --send-again`` days after a crash. On SQLite and
PostgreSQL, against the real SMTP test server, on a manual clock."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from newsletter.db import outbox, session_scope
from newsletter.db.outbox import admin as outbox_admin
from newsletter.db.outbox import plan as outbox_plan
from newsletter.delivery.smtp import SmtpSender
from newsletter.pipeline.send import SendOptions, SendSummary, send_due
from tests.support.sending import (
    SECRET,
    ManualClock,
    add_entries,
    add_subscribers,
    digests,
    sent_entry_ids,
    simple_compose,
    utc,
)
from tests.support.smtp import Fault, SmtpTestServer
from tests.test_send import entry_ids_received, make_settings

DAY0 = utc(2026, 6, 15, 9, 0)


def send(
    engine: Engine, server: SmtpTestServer, tmp_path: Path, now: datetime, *, wait: bool = True
) -> SendSummary:
    """One ``send --now`` at ``now``; ``wait=False`` stops instead of waiting for retries,
    which leaves the outbox as a process killed during that wait leaves it."""
    clock = ManualClock(now)
    settings = make_settings(server, tmp_path, retry_base_seconds=600, retry_max_seconds=600)
    with SmtpSender(settings.smtp, clock=lambda: 0.0, sleep=clock.sleep) as sender:
        return send_due(
            engine,
            settings,
            sender,
            compose=simple_compose,
            options=SendOptions(force=True, wait_for_retries=wait),
            now=clock.now,
            sleep=clock.sleep,
        )


def all_received(server: SmtpTestServer, email: str) -> Counter[int]:
    return Counter(i for ids in entry_ids_received(server, email) for i in ids)


def test_a_digest_superseded_while_waiting_for_a_retry_hands_on_its_entries(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["a@example.org"])
    day1 = add_entries(
        engine, [f"Optimization {i}" for i in range(10)], first_seen=DAY0 - timedelta(hours=2)
    )
    smtp_server.add_fault(Fault("DATA", "451 4.3.0 Try again", times=1))
    first = send(engine, smtp_server, tmp_path, DAY0, wait=False)
    assert (first.sent, first.retried) == (0, 1)
    assert [d.status for d in digests(engine)] == ["pending"]

    day2 = add_entries(engine, ["Optimization late"], first_seen=DAY0 + timedelta(hours=12))
    second = send(engine, smtp_server, tmp_path, DAY0 + timedelta(days=1))
    assert second.sent == 1
    assert all_received(smtp_server, "a@example.org") == Counter(day1 + day2)
    old, new = digests(engine)
    assert old.status == "skipped" and "carries its entries" in (old.error or "")
    assert old.window_end is None
    assert (new.status, new.n_entries) == ("sent", 11)


def test_a_first_digest_superseded_before_it_was_composed_loses_nothing(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Killed after planning, before any claim: tomorrow's window reaches back to it."""
    (a,) = add_subscribers(engine, ["a@example.org"])
    early = add_entries(engine, ["Optimization early"], first_seen=DAY0 - timedelta(hours=20))
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15")], now=DAY0)
    later = add_entries(engine, ["Optimization later"], first_seen=DAY0 + timedelta(hours=6))
    assert send(engine, smtp_server, tmp_path, DAY0 + timedelta(days=1)).sent == 1
    assert all_received(smtp_server, "a@example.org") == Counter(early + later)


def _crash_after_sending_commit(
    engine: Engine, sid: int, period: str, now: datetime, entry_ids: list[int]
) -> int:
    """What a ``send`` killed between the ``sending`` commit and DATA leaves behind."""
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(sid, period)], now=now)
    with session_scope(engine) as s:
        (claim,) = outbox.claim_batch(s, "w-dead", now=now, limit=1, lease=timedelta(minutes=5))
        got = outbox.mark_sending(
            s,
            claim.id,
            "w-dead",
            subscriber_id=sid,
            subject="s",
            message_id="<m@example.org>",
            window_start=now - timedelta(days=1),
            window_end=now,
            entries=[(i, 1.0) for i in entry_ids],
            lease_until=now,  # its lease has run out by the time anyone looks
        )
        assert got == "ok"
        return claim.id


def _days_of_sends_after_a_crash(
    engine: Engine, server: SmtpTestServer, tmp_path: Path
) -> tuple[int, list[int], list[int]]:
    """Day 0 crashes mid-send; days 1 and 2 go out; returns (digest, lost ids, later ids)."""
    (a,) = add_subscribers(engine, ["a@example.org"])
    lost = add_entries(
        engine, ["Optimization A", "Optimization B"], first_seen=DAY0 - timedelta(hours=2)
    )
    crashed = _crash_after_sending_commit(engine, a, "2026-06-15", DAY0, lost)
    later: list[int] = []
    for day in (1, 2):
        at = DAY0 + timedelta(days=day)
        seen = at - timedelta(hours=3)
        later += add_entries(engine, [f"Optimization day {day}"], first_seen=seen)
        assert send(engine, server, tmp_path, at).sent == 1
    assert all_received(server, "a@example.org") == Counter(later)  # the crashed one is owed
    return crashed, lost, later


def test_send_again_days_later_delivers_once_through_the_next_digest(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    crashed, lost, later = _days_of_sends_after_a_crash(engine, smtp_server, tmp_path)
    at = DAY0 + timedelta(days=3)
    with session_scope(engine) as s:
        outbox_admin.settle(s, crashed, "send-again", now=at)
    newest = add_entries(engine, ["Optimization day 3"], first_seen=at - timedelta(hours=3))
    assert send(engine, smtp_server, tmp_path, at).sent == 1
    assert all_received(smtp_server, "a@example.org") == Counter(lost + later + newest)
    with session_scope(engine) as s:
        info = outbox_admin.get_digest(s, crashed, now=at)
    # ``status`` names where its entries went.
    assert info.status == "skipped"
    assert info.error == "superseded by the digest of 2026-06-18, which carries its entries"


def test_send_again_in_a_period_already_sent_goes_out_as_that_digest(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    crashed, lost, later = _days_of_sends_after_a_crash(engine, smtp_server, tmp_path)
    at = DAY0 + timedelta(days=2, hours=2)  # today's digest has gone already
    with session_scope(engine) as s:
        outbox_admin.settle(s, crashed, "send-again", now=at)
    assert send(engine, smtp_server, tmp_path, at).sent == 1
    assert all_received(smtp_server, "a@example.org") == Counter(lost + later)
    with session_scope(engine) as s:
        info = outbox_admin.get_digest(s, crashed, now=at)
    assert (info.status, info.n_entries) == ("sent", 2)


def test_a_catch_up_digest_is_capped_per_period_so_a_failure_costs_no_entries(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real composer, max_items 5: a failed day's five and the next day's five all
    arrive in the digest that catches up, which spans two periods."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    (a,) = add_subscribers(engine, ["a@example.org"], max_items=5)
    day1 = add_entries(
        engine, [f"Optimization {i}" for i in range(5)], first_seen=DAY0 - timedelta(hours=2)
    )
    smtp_server.add_fault(Fault("DATA", "451 4.3.0 Try again", times=1))
    clock = ManualClock(DAY0)
    settings = make_settings(smtp_server, tmp_path, retry_base_seconds=600)
    with SmtpSender(settings.smtp, clock=lambda: 0.0, sleep=clock.sleep) as sender:
        first = send_due(
            engine,
            settings,
            sender,
            options=SendOptions(force=True, wait_for_retries=False),
            now=clock.now,
            sleep=clock.sleep,
        )
    assert (first.sent, first.retried) == (0, 1)
    day2 = add_entries(
        engine, [f"Optimization late {i}" for i in range(5)], first_seen=DAY0 + timedelta(hours=6)
    )
    clock = ManualClock(DAY0 + timedelta(days=1))
    with SmtpSender(settings.smtp, clock=lambda: 0.0, sleep=clock.sleep) as sender:
        second = send_due(
            engine,
            settings,
            sender,
            options=SendOptions(force=True),
            now=clock.now,
            sleep=clock.sleep,
        )
    assert second.sent == 1
    with session_scope(engine) as s:
        assert sent_entry_ids(s, [a])[a] == set(day1 + day2)
    # A regular one-day window keeps the profile's cap.
    add_entries(
        engine,
        [f"Optimization day3 {i}" for i in range(8)],
        first_seen=DAY0 + timedelta(days=1, hours=6),
    )
    clock = ManualClock(DAY0 + timedelta(days=2))
    with SmtpSender(settings.smtp, clock=lambda: 0.0, sleep=clock.sleep) as sender:
        send_due(
            engine,
            settings,
            sender,
            options=SendOptions(force=True),
            now=clock.now,
            sleep=clock.sleep,
        )
    assert [d.n_entries for d in digests(engine) if d.status == "sent"][-1] == 5
