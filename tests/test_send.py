"""The send pipeline end to end against a real SMTP server, on SQLite and PostgreSQL.

Time is driven by a manual clock: ``now`` is passed in, and the backoff "sleeps" only
advance it, so retries are exercised without waiting. Most tests compose with a small,
obvious composer (``simple_compose``: title contains a keyword) so their assertions can
name entry ids; the product's composer runs in ``test_catch_up_with_the_real_composer``
and in every CLI and subprocess test.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter.config import Settings, settings_from_mapping
from newsletter.db import session_scope
from newsletter.db.outbox import plan as outbox_plan
from newsletter.db.runs import last_run
from newsletter.delivery import PreviewSender
from newsletter.delivery.smtp import SmtpSender
from newsletter.errors import NewsletterError, RenderError
from newsletter.models import Suppression
from newsletter.pipeline.jobs import ComposeFn, DigestJob
from newsletter.pipeline.send import Outcome, SendOptions, SendSummary, send_due
from tests.support.sending import (
    SECRET,
    ManualClock,
    add_entries,
    add_subscribers,
    digest_entry_ids,
    digests,
    sent_entry_ids,
    simple_compose,
    utc,
)
from tests.support.smtp import Fault, SmtpTestServer

DAY0 = utc(2026, 6, 15, 9, 0)  # 09:00 UTC, after the default 07:00 send time


def make_settings(server: SmtpTestServer | None, tmp_path: Path, **smtp: Any) -> Settings:
    data: dict[str, Any] = {
        "newsletter": {
            "delivery": "smtp" if server else "preview",
            "from": "Digest <digest@example.org>",
            "batch_size": 4,
        }
    }
    if server is not None:
        data["smtp"] = server.smtp_config(**smtp)
    return settings_from_mapping(data, base_dir=tmp_path)


def run(
    engine: Engine,
    settings: Settings,
    clock: ManualClock,
    *,
    force: bool = True,
    emails: Sequence[str] | None = None,
    dry_run: bool = False,
    compose: ComposeFn | None = simple_compose,
    stop: threading.Event | None = None,
    progress: Any = None,
) -> SendSummary:
    sender = (
        SmtpSender(settings.smtp, clock=lambda: 0.0, sleep=clock.sleep)
        if settings.newsletter.delivery == "smtp"
        else PreviewSender(settings.newsletter.outbox_dir)
    )
    with sender:
        return send_due(
            engine,
            settings,
            sender,
            compose=compose,
            options=SendOptions(
                force=force, emails=tuple(emails) if emails else None, dry_run=dry_run
            ),
            now=clock.now,
            sleep=clock.sleep,
            stop=stop,
            progress=progress,
        )


def entry_ids_received(server: SmtpTestServer, email: str) -> list[list[int]]:
    return [
        [int(i) for i in str(m.message["X-Entry-Ids"]).split(",")]
        for m in server.received_by(email)
    ]


def test_each_subscriber_gets_exactly_one_digest_per_period(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    emails = [f"s{i}@example.org" for i in range(6)]
    add_subscribers(engine, emails)
    e0 = add_entries(engine, ["Bilevel optimization", "Cats"], first_seen=DAY0 - timedelta(hours=2))
    settings = make_settings(smtp_server, tmp_path)
    clock = ManualClock(DAY0)
    first = run(engine, settings, clock)
    assert (first.sent, first.skipped, first.failed, first.retried) == (6, 0, 0, 0)
    # Sending again the same day, with or without --now, sends nothing more.
    again = run(engine, settings, clock)
    assert (again.created, again.sent) == (0, 0)
    assert run(engine, settings, clock, force=False).sent == 0
    assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
    assert entry_ids_received(smtp_server, emails[0]) == [[e0[0]]]
    # The next day: only what is new.
    clock.advance(days=1)
    e1 = add_entries(
        engine, ["Preference optimization"], first_seen=clock.now() - timedelta(hours=1)
    )
    assert run(engine, settings, clock).sent == 6
    assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 2))
    assert entry_ids_received(smtp_server, emails[0]) == [[e0[0]], [e1[0]]]
    # The envelope and the recorded evidence.
    got = smtp_server.received_by(emails[0])[0]
    assert got.mail_from == "digest@example.org"
    rows = digests(engine)
    assert {d.status for d in rows} == {"sent"}
    assert all(d.smtp_reply and d.smtp_reply.startswith("250") for d in rows)
    assert all(d.message_id and d.n_entries == 1 for d in rows)
    with session_scope(engine) as s:
        run_row = last_run(s, "send")
        assert run_row is not None and run_row.status == "ok"
        assert run_row.summary["sent"] == 6


def test_nothing_new_is_skipped_without_mail(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["a@example.org"], keywords=["quantum"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    summary = run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0))
    assert (summary.sent, summary.skipped) == (0, 1)
    assert smtp_server.messages == []
    [d] = digests(engine)
    assert d.status == "skipped" and d.window_end == DAY0


def test_temporary_faults_are_retried_with_backoff(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["flaky@example.org", "fine@example.org", "drop@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    smtp_server.add_fault(Fault("DATA", "451 4.3.0 Try again", frozenset({"flaky@example.org"}), 2))
    smtp_server.add_fault(Fault("DATA", "drop", frozenset({"drop@example.org"}), 1))
    clock = ManualClock(DAY0)
    settings = make_settings(smtp_server, tmp_path, retry_base_seconds=10, retry_max_seconds=60)
    summary = run(engine, settings, clock)
    assert (summary.sent, summary.failed, summary.retried, summary.pending) == (3, 0, 3, 0)
    assert smtp_server.per_recipient() == Counter(
        {"flaky@example.org": 1, "fine@example.org": 1, "drop@example.org": 1}
    )
    assert smtp_server.handler.attempts["flaky@example.org"] == 3
    # It waited for the retries (backoff 5..10 s, then 10..20 s), on the manual clock.
    assert sum(clock.slept) >= 5 + 10
    flaky = next(d for d in digests(engine) if d.subscriber_id == 1)
    assert (flaky.status, flaky.attempts) == ("sent", 3)


def test_a_permanent_failure_does_not_stop_the_others(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    emails = ["a@example.org", "bounce@example.org", "c@example.org"]
    ids = add_subscribers(engine, emails)
    (e0,) = add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    smtp_server.add_fault(
        Fault(
            "RCPT",
            "550 5.1.1 <bounce@example.org>: Recipient address rejected",
            frozenset({emails[1]}),
            1,
        )
    )
    clock = ManualClock(DAY0)
    settings = make_settings(smtp_server, tmp_path)
    summary = run(engine, settings, clock)
    assert (summary.sent, summary.failed, summary.retried) == (2, 1, 0)
    [(who, reason)] = summary.failures
    assert who == emails[1]
    assert reason == (
        f"{emails[1]}: RCPT TO rejected: 550 5.1.1 <bounce@example.org>: "
        "Recipient address rejected (SMTP 550)"
    )
    failed = next(d for d in digests(engine) if d.subscriber_id == ids[1])
    assert failed.status == "failed" and "550 5.1.1" in (failed.error or "")
    assert digest_entry_ids(engine, failed.id) == []
    # The failed digest's entries are not lost: they come with the next one.
    clock.advance(days=1)
    (e1,) = add_entries(engine, ["More optimization"], first_seen=clock.now() - timedelta(hours=1))
    assert run(engine, settings, clock).sent == 3
    assert entry_ids_received(smtp_server, emails[1]) == [[e0, e1]]
    assert entry_ids_received(smtp_server, emails[0]) == [[e0], [e1]]


def test_attempts_are_bounded(engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path) -> None:
    add_subscribers(engine, ["busy@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    smtp_server.add_fault(Fault("RCPT", "450 4.2.1 Mailbox busy"))
    summary = run(engine, make_settings(smtp_server, tmp_path, max_attempts=3), ManualClock(DAY0))
    assert (summary.sent, summary.failed, summary.retried) == (0, 1, 2)
    [d] = digests(engine)
    assert d.status == "failed" and d.attempts == 3
    assert d.error == (
        "gave up after 3 attempts: busy@example.org: RCPT TO rejected: "
        "450 4.2.1 Mailbox busy (SMTP 450)"
    )


def test_unreachable_server_charges_no_digest(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["a@example.org", "b@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    smtp_server.add_fault(Fault("EHLO", "421 4.3.2 Service not available"))
    clock = ManualClock(DAY0)
    settings = make_settings(smtp_server, tmp_path, max_attempts=3)
    summary = run(engine, settings, clock)
    assert summary.error is not None and "SMTP server unavailable" in summary.error
    assert (summary.sent, summary.failed, summary.pending) == (0, 0, 2)
    assert len(clock.slept) == 2  # backoff between the three connection attempts
    assert [(d.status, d.attempts, d.claimed_by) for d in digests(engine)] == [
        ("pending", 0, None)
    ] * 2
    # The server comes back: the next run sends both.
    smtp_server.handler.faults.clear()
    assert run(engine, settings, clock).sent == 2


def test_catch_up_merges_missed_days_into_one_digest(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    (sid,) = add_subscribers(engine, ["ada@example.org"])
    settings = make_settings(smtp_server, tmp_path)
    clock = ManualClock(DAY0)
    (before,) = add_entries(engine, ["Old optimization"], first_seen=DAY0 - timedelta(hours=3))
    assert run(engine, settings, clock, force=False).sent == 1
    # Three days of entries, and no run at all.
    new: list[int] = []
    for day in (1, 2, 3):
        new += add_entries(
            engine,
            [f"Day {day} optimization A", f"Day {day} optimization B", "Unrelated"],
            first_seen=DAY0 + timedelta(days=day, hours=-6),
        )[:2]
    clock.advance(days=3)
    summary = run(engine, settings, clock, force=False)
    assert summary.sent == 1
    assert entry_ids_received(smtp_server, "ada@example.org") == [[before], new]
    assert [d.period for d in digests(engine)] == ["2026-06-15", "2026-06-18"]
    with session_scope(engine) as s:
        assert sent_entry_ids(s, [sid]) == {sid: {before, *new}}


@pytest.mark.parametrize(
    ("tz", "send_time", "start", "due_at"),
    [
        ("UTC", "07:00", utc(2026, 6, 15, 0, 0), utc(2026, 6, 15, 7, 0)),
        ("Europe/Berlin", "07:00", utc(2026, 6, 15, 0, 0), utc(2026, 6, 15, 5, 0)),
        ("America/Los_Angeles", "07:00", utc(2026, 6, 15, 8, 0), utc(2026, 6, 15, 14, 0)),
        ("Asia/Kolkata", "07:00", utc(2026, 6, 14, 20, 0), utc(2026, 6, 15, 1, 30)),
        # DST change day: Berlin jumps from 02:00 CET to 03:00 CEST at 01:00 UTC.
        ("Europe/Berlin", "02:30", utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 1, 0)),
        ("Europe/Berlin", "07:00", utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 5, 0)),
        # Fall back: Los Angeles repeats 01:00-02:00 local; 01:30 is due at its first.
        ("America/Los_Angeles", "01:30", utc(2026, 11, 1, 7, 0), utc(2026, 11, 1, 8, 30)),
    ],
)
def test_digest_goes_out_once_at_local_send_time(
    engine: Engine,
    smtp_server: SmtpTestServer,
    tmp_path: Path,
    tz: str,
    send_time: str,
    start: datetime,
    due_at: datetime,
) -> None:
    add_subscribers(engine, ["tz@example.org"], timezone=tz, send_time=send_time)
    add_entries(engine, ["Bilevel optimization"], first_seen=start - timedelta(hours=1))
    settings = make_settings(smtp_server, tmp_path)
    clock = ManualClock(start)
    sent_at: list[datetime] = []
    # The scheduler's send job, every 30 minutes over 12 hours (every minute near the time).
    while clock.now() < start + timedelta(hours=12):
        if run(engine, settings, clock, force=False).sent:
            sent_at.append(clock.now())
        near = abs((clock.now() - due_at).total_seconds()) <= 1800
        clock.advance(minutes=1 if near else 30)
    assert sent_at == [due_at]
    assert len(smtp_server.received_by("tz@example.org")) == 1


def test_dry_run_changes_nothing(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["a@example.org", "b@example.org"])
    add_subscribers(engine, ["q@example.org"], keywords=["quantum"])
    add_entries(
        engine,
        ["Bilevel optimization", "Preference optimization"],
        first_seen=DAY0 - timedelta(hours=1),
    )
    summary = run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0), dry_run=True)
    assert [(p.recipient, p.period, p.n_entries) for p in summary.planned] == [
        ("a@example.org", "2026-06-15", 2),
        ("b@example.org", "2026-06-15", 2),
        ("q@example.org", "2026-06-15", 0),
    ]
    assert summary.planned[0].subject == "2 new for a@example.org (2026-06-15)"
    assert summary.planned[2].subject is None
    assert digests(engine) == [] and smtp_server.messages == []
    with session_scope(engine) as s:
        assert last_run(s, "send") is None


def test_one_subscriber_only(engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path) -> None:
    add_subscribers(engine, ["a@example.org", "b@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    settings = make_settings(smtp_server, tmp_path)
    summary = run(engine, settings, ManualClock(DAY0), emails=["B@example.org"])
    assert summary.sent == 1
    assert smtp_server.per_recipient() == Counter({"b@example.org": 1})
    with pytest.raises(NewsletterError, match=r"no subscriber nobody@example\.org"):
        run(engine, settings, ManualClock(DAY0), emails=["nobody@example.org"])


def test_unsubscribed_after_planning_gets_nothing(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "2026-06-15"), (b, "2026-06-15")], now=DAY0)
        s.add(Suppression(email="b@example.org", subscriber_id=b, source="one-click"))
    summary = run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0))
    assert (summary.sent, summary.skipped) == (1, 1)
    assert smtp_server.per_recipient() == Counter({"a@example.org": 1})


def test_stop_finishes_the_message_in_flight_and_leaves_the_rest_pending(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, [f"s{i}@example.org" for i in range(6)])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    stop = threading.Event()

    class StopAfterTwo:
        def start(self, total: int) -> None:
            assert total == 6

        def advance(self, outcome: Outcome, recipient: str) -> None:
            if outcome == "sent" and len(smtp_server.messages) == 2:
                stop.set()  # as SIGTERM does

    summary = run(
        engine,
        make_settings(smtp_server, tmp_path),
        ManualClock(DAY0),
        stop=stop,
        progress=StopAfterTwo(),
    )
    assert summary.interrupted and summary.sent == 2 and summary.pending == 4
    assert sorted(d.status for d in digests(engine)) == ["pending"] * 4 + ["sent"] * 2
    assert all(d.claimed_by is None for d in digests(engine) if d.status == "pending")
    assert run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0)).sent == 4
    assert len(smtp_server.messages) == 6


def test_parallel_connections_deliver_each_digest_once(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    emails = [f"p{i}@example.org" for i in range(20)]
    add_subscribers(engine, emails)
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    settings = make_settings(smtp_server, tmp_path, connections=3, max_per_connection=4)
    summary = run(engine, settings, ManualClock(DAY0))
    assert summary.sent == 20
    assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
    assert 3 <= smtp_server.handler.connections <= 20 // 4 + 3 * 2


def test_preview_delivery_writes_the_outbox(engine: Engine, tmp_path: Path) -> None:
    add_subscribers(engine, ["ada@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    settings = make_settings(None, tmp_path)
    summary = run(engine, settings, ManualClock(DAY0))
    assert summary.sent == 1
    [d] = digests(engine)
    files = list((tmp_path / "outbox" / "sent" / "2026-06-15").iterdir())
    assert [f.name for f in files] == [f"ada@example.org-{d.id}.eml"]
    assert d.status == "sent" and str(files[0]) in (d.smtp_reply or "")
    assert b"Bilevel optimization" in files[0].read_bytes()


def test_weekly_subscribers_get_one_digest_per_iso_week(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["w@example.org"], frequency="weekly", weekday=2)  # Wednesday
    settings = make_settings(smtp_server, tmp_path)
    clock = ManualClock(utc(2026, 6, 15, 0, 0))  # Monday
    for day in range(14):
        add_entries(engine, [f"Optimization {day}"], first_seen=clock.now() + timedelta(hours=1))
        for hour in (6, 7, 8, 20):
            clock.current = utc(2026, 6, 15) + timedelta(days=day, hours=hour)
            run(engine, settings, clock, force=False)
    assert [d.period for d in digests(engine)] == ["2026-W25", "2026-W26"]
    got = entry_ids_received(smtp_server, "w@example.org")
    # First digest: the week's first period (7 days back), i.e. Mon..Wed; then Wed..Wed.
    assert [len(x) for x in got] == [3, 7]
    assert not set(got[0]) & set(got[1])
    with session_scope(engine) as s:
        assert s.scalar(select(Suppression)) is None


def test_a_digest_that_cannot_be_composed_fails_alone(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    _, bad, _ = add_subscribers(engine, ["a@example.org", "bad@example.org", "c@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))

    def fragile(session: Session, reqs: Sequence[DigestJob]) -> Any:
        if any(r.subscriber_id == bad for r in reqs):
            raise RenderError("template blew up")
        return simple_compose(session, reqs)

    summary = run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0), compose=fragile)
    assert (summary.sent, summary.failed) == (2, 1)
    assert summary.failures == [("bad@example.org", "could not compose: template blew up")]
    assert smtp_server.per_recipient() == Counter({"a@example.org": 1, "c@example.org": 1})


def sent_entries(engine: Engine, sid: int) -> list[list[int]]:
    """Entry ids of each sent digest of a subscriber, oldest first (from the outbox)."""
    return [
        digest_entry_ids(engine, d.id)
        for d in digests(engine)
        if d.subscriber_id == sid and d.status == "sent"
    ]


def test_catch_up_with_the_real_composer(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product's composer (match + render): missed days merged, nothing repeated."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    ada, _ = add_subscribers(
        engine, ["ada@example.org", "bob@example.org"], keywords=["bilevel optimization"]
    )
    settings = make_settings(smtp_server, tmp_path)
    clock = ManualClock(DAY0)
    (before,) = add_entries(
        engine, ["Bilevel optimization, day 0"], first_seen=DAY0 - timedelta(hours=3)
    )
    first = run(engine, settings, clock, force=False, compose=None)
    assert first.sent == 2
    new: list[int] = []
    for day in (1, 2, 3):
        new += add_entries(
            engine,
            [
                f"Bilevel optimization on day {day}",
                f"Stochastic bilevel optimization {day}",
                "Cats",
            ],
            first_seen=DAY0 + timedelta(days=day, hours=-6),
        )[:2]
    clock.advance(days=3)
    assert run(engine, settings, clock, force=False, compose=None).sent == 2
    first_digest, second_digest = sent_entries(engine, ada)
    assert first_digest == [before]
    assert sorted(second_digest) == sorted(new)  # all three days, ranked by the matcher
    got = smtp_server.received_by("ada@example.org")
    assert len(got) == 2
    body = got[1].message.get_body(("plain",)).get_content()
    assert all(f"day {d}" in body or f"optimization {d}" in body for d in (1, 2, 3))
    assert "day 0" not in body
    # Sending again changes nothing.
    assert run(engine, settings, clock, force=True, compose=None).sent == 0
    assert len(smtp_server.received_by("ada@example.org")) == 2
