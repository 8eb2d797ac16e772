"""``newsletter run``: the APScheduler wiring, the scheduler lease, clean shutdown."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from newsletter.config import Settings, settings_from_mapping
from newsletter.db import session_scope
from newsletter.db.leases import SCHEDULER_LEASE, holder_of
from newsletter.delivery import PreviewSender, Sender
from newsletter.scheduler import DigestScheduler
from tests.support.sending import (
    add_entries,
    add_subscribers,
    cli_env,
    digests,
    simple_compose,
    utc,
    write_config,
)
from tests.support.smtp import SmtpTestServer


def preview_settings(tmp_path: Path, **newsletter: object) -> Settings:
    return settings_from_mapping(
        {"newsletter": {"delivery": "preview", **newsletter}}, base_dir=tmp_path
    )


def test_jobs_coalesce_and_never_overlap(sqlite_engine: Engine, tmp_path: Path) -> None:
    sched = DigestScheduler(sqlite_engine, preview_settings(tmp_path, fetch_every_minutes=15))
    scheduler = sched.build()
    jobs = {j.id: j for j in scheduler.get_jobs()}
    assert set(jobs) == {"fetch", "send", "lease"}
    for job in jobs.values():
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time
        assert isinstance(job.trigger, IntervalTrigger)
    assert jobs["fetch"].trigger.interval == timedelta(minutes=15)
    assert jobs["send"].trigger.interval == timedelta(minutes=1)
    assert jobs["lease"].trigger.interval == timedelta(seconds=30)
    assert str(scheduler.timezone) == "UTC"


def test_a_second_scheduler_stands_by_then_takes_over(engine: Engine, tmp_path: Path) -> None:
    settings = preview_settings(tmp_path)
    add_subscribers(engine, ["ada@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=utc(2026, 6, 15, 6, 0))
    clock = lambda: utc(2026, 6, 15, 9, 0)  # noqa: E731
    a = DigestScheduler(engine, settings, compose=simple_compose, clock=clock, worker="A")
    b = DigestScheduler(engine, settings, compose=simple_compose, clock=clock, worker="B")
    assert a.hold_lease()
    assert b.send_round() is None and b.fetch_round() is None
    assert b.once().standby
    summary = a.send_round()
    assert summary is not None and summary.sent == 1
    a.release_lease()
    assert b.hold_lease()
    with session_scope(engine) as s:
        lease = holder_of(s, SCHEDULER_LEASE, now=clock())
        assert lease is not None and lease.holder == "B"
    assert [d.status for d in digests(engine)] == ["sent"]


def test_once_fetches_sends_and_releases_the_lease(engine: Engine, tmp_path: Path) -> None:
    settings = preview_settings(tmp_path)
    add_subscribers(engine, ["ada@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=utc(2026, 6, 15, 6, 0))
    clock = lambda: utc(2026, 6, 15, 9, 0)  # noqa: E731
    result = DigestScheduler(engine, settings, compose=simple_compose, clock=clock).once()
    assert not result.standby
    assert result.fetch is not None and result.fetch.feeds == ()
    assert result.send is not None and result.send.sent == 1
    with session_scope(engine) as s:
        assert holder_of(s, SCHEDULER_LEASE, now=clock()) is None
    assert (tmp_path / "outbox" / "sent" / "2026-06-15").is_dir()


def test_run_forever_stops_cleanly_on_request(sqlite_engine: Engine, tmp_path: Path) -> None:
    settings = preview_settings(tmp_path)
    add_subscribers(sqlite_engine, ["ada@example.org"])
    add_entries(sqlite_engine, ["Bilevel optimization"], first_seen=utc(2026, 6, 15, 6, 0))
    sent = threading.Event()

    class Recording(PreviewSender):
        def close(self) -> None:
            sent.set()

    def factory(s: Settings) -> Sender:
        return Recording(s.newsletter.outbox_dir)

    sched = DigestScheduler(
        sqlite_engine,
        settings,
        sender_factory=factory,
        compose=simple_compose,
        clock=lambda: utc(2026, 6, 15, 9, 0),
    )
    thread = threading.Thread(target=sched.run_forever, kwargs={"install_signals": False})
    thread.start()
    assert sent.wait(30), "the first send round did not run"
    sched.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    assert [d.status for d in digests(sqlite_engine)] == ["sent"]
    with session_scope(sqlite_engine) as s:
        assert holder_of(s, SCHEDULER_LEASE, now=utc(2026, 6, 15, 9, 0)) is None


def test_sigterm_finishes_the_message_in_flight(
    engine: Engine, db_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    emails = [f"r{i}@example.org" for i in range(8)]
    # Due since midnight UTC, whatever the time of the test run.
    add_subscribers(engine, emails, timezone="UTC", send_time="00:00")
    add_entries(engine, ["Bilevel optimization"], first_seen=datetime.now(UTC) - timedelta(hours=1))
    cfg = write_config(tmp_path, db_url, smtp_server)
    smtp_server.handler.delay = 0.3
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), "run"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert smtp_server.handler.wait_for(2, timeout=60), "no digest went out"
        assert smtp_server.handler.wait_for_data(3, timeout=60)  # the third is in flight
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping after the message in flight" in err
    assert "newsletter run: stopped" in err
    rows = digests(engine)
    # The message in flight was finished and recorded; nothing is left ambiguous.
    assert [d.status for d in rows].count("sending") == 0
    sent = {d.subscriber_id for d in rows if d.status == "sent"}
    assert len(sent) == len(smtp_server.messages) >= 3
    assert {d.status for d in rows} <= {"sent", "pending"}
    with session_scope(engine) as s:
        assert holder_of(s, SCHEDULER_LEASE, now=datetime.now(UTC)) is None


def test_the_jobs_run_on_the_real_clock_under_a_simulated_one(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APScheduler keeps real time: built from a simulated ``now`` months back, the fetch
    job was already overdue and fetched a second time right after start-up's fetch."""
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-01-09T06:59:50Z")
    sched = DigestScheduler(sqlite_engine, preview_settings(tmp_path, fetch_every_minutes=15))
    before = datetime.now(UTC)
    jobs = {j.id: j for j in sched.build().get_jobs()}
    assert jobs["fetch"].next_run_time >= before + timedelta(minutes=15)
    assert before <= jobs["send"].next_run_time <= datetime.now(UTC)


def test_an_unreachable_smtp_server_is_one_line_per_round(
    sqlite_engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_from_mapping(
        {
            "newsletter": {"delivery": "smtp", "base_url": "https://news.example.org"},
            "smtp": {
                "host": "127.0.0.1",
                "port": port,
                "max_attempts": 2,
                "retry_base_seconds": 0.01,
                "retry_max_seconds": 0.02,
            },
        },
        base_dir=tmp_path,
    )
    add_subscribers(sqlite_engine, ["ada@example.org"])
    add_entries(sqlite_engine, ["Bilevel optimization"], first_seen=utc(2026, 6, 15, 6, 0))
    sched = DigestScheduler(
        sqlite_engine, settings, compose=simple_compose, clock=lambda: utc(2026, 6, 15, 9, 0)
    )
    sched.hold_lease()
    with caplog.at_level(logging.INFO):
        summary = sched.send_round()
    assert summary is not None and summary.error
    gave_up = [r for r in caplog.records if "SMTP server unavailable" in r.getMessage()]
    assert len(gave_up) == 1, [r.getMessage() for r in gave_up]
    assert gave_up[0].levelno == logging.ERROR and gave_up[0].name == "newsletter.scheduler"
