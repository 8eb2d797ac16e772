"""Queued sending: ``send`` plans and queues batches, ``newsletter worker`` processes
(Celery) run them against one PostgreSQL outbox, and every digest goes out once."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from newsletter.config import load_settings, settings_from_mapping
from newsletter.db import connect, session_scope
from newsletter.db.outbox import claim_batch
from newsletter.errors import ConfigError
from newsletter.pipeline.batch import plan_batches
from newsletter.pipeline.send import SendOptions
from newsletter.workers.app import make_app
from newsletter.workers.tasks import TASK_SEND_BATCH
from tests.support.queue import RedisServer, free_port, kill_hard, newsletter, start_worker, stop
from tests.support.sending import SECRET, add_entries, add_subscribers, digests, write_config
from tests.support.smtp import SmtpTestServer


def seed(engine: Engine, n: int) -> list[str]:
    emails = [f"reader{i:04d}@example.org" for i in range(n)]
    add_subscribers(engine, emails, keywords=["optimization"])
    add_entries(
        engine,
        ["Bilevel optimization at scale", "Preference optimization for LLMs", "Unrelated"],
        first_seen=datetime.now(UTC) - timedelta(hours=1),
    )
    return emails


def queue_config(
    tmp_path: Path, db_url: str, smtp: SmtpTestServer, broker_url: str, **queue: object
) -> Path:
    cfg = write_config(tmp_path, db_url, smtp)
    lines = ["[queue]", f'broker_url = "{broker_url}"']
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in queue.items()]
    cfg.write_text(cfg.read_text() + "\n".join(lines) + "\n")
    return cfg


def wait_until_settled(engine: Engine, n: int, timeout: float = 240.0) -> list[str]:
    """Poll the outbox until ``n`` digests are in a final state (or the timeout ends)."""
    deadline = time.monotonic() + timeout
    statuses: list[str] = []
    while time.monotonic() < deadline:
        statuses = [d.status for d in digests(engine)]
        if len(statuses) == n and all(s in ("sent", "failed", "skipped") for s in statuses):
            break
        time.sleep(0.5)
    return statuses


def test_a_queue_refuses_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        settings_from_mapping(
            {"queue": {"broker_url": "redis://127.0.0.1:6379/0"}}, base_dir=tmp_path
        )
    with pytest.raises(ConfigError, match="lease_seconds"):
        settings_from_mapping(
            {
                "database": {"url": "postgresql+psycopg://x@127.0.0.1/db"},
                "queue": {
                    "broker_url": "redis://127.0.0.1:6379/0",
                    "lease_seconds": 60,
                    "visibility_timeout": 60,
                },
            },
            base_dir=tmp_path,
        )


def test_a_task_delivered_twice_does_nothing_the_second_time(
    pg_url: str, smtp_server: SmtpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    engine = connect(pg_url)
    try:
        emails = seed(engine, 6)
        settings = settings_from_mapping(
            {
                "database": {"url": pg_url},
                "newsletter": {
                    "delivery": "smtp",
                    "from": "Digest <d@example.org>",
                    "base_url": "https://digest.example.org",
                },
                "smtp": smtp_server.smtp_config(),
                "queue": {"broker_url": "redis://127.0.0.1:6379/15"},
            },
            base_dir=tmp_path,
        )
        [batch] = plan_batches(engine, settings, SendOptions(force=True))
        assert len(batch) == 6
        task = make_app(settings).tasks[TASK_SEND_BATCH]
        first = task.apply(args=[batch]).get()  # run here, as a worker would
        second = task.apply(args=[batch]).get()
        assert first["sent"] == 6
        assert (second["sent"], second["skipped"], second["failed"]) == (0, 0, 0)
        assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
        # Planned again, nothing is left to name.
        assert plan_batches(engine, settings, SendOptions(force=True)) == []
    finally:
        engine.dispose()


def test_a_worker_composes_every_batch_with_one_composer(
    pg_url: str, smtp_server: SmtpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matching index and the compiled shapes are built once per worker process,
    not once per task: a send's batches share one window of entries."""
    import newsletter.pipeline.compose as compose

    built: list[int] = []

    class CountingMatcher(compose.Matcher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(compose, "Matcher", CountingMatcher)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    engine = connect(pg_url)
    try:
        emails = seed(engine, 6)
        settings = settings_from_mapping(
            {
                "database": {"url": pg_url},
                "newsletter": {
                    "delivery": "smtp",
                    "from": "Digest <d@example.org>",
                    "base_url": "https://digest.example.org",
                },
                "smtp": smtp_server.smtp_config(),
                "queue": {"broker_url": "redis://127.0.0.1:6379/15", "batch_size": 2},
            },
            base_dir=tmp_path,
        )
        batches = plan_batches(engine, settings, SendOptions(force=True))
        assert len(batches) == 3
        task = make_app(settings).tasks[TASK_SEND_BATCH]
        assert sum(task.apply(args=[b]).get()["sent"] for b in batches) == 6
        assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
        assert len(built) == 1, "a task rebuilt the matching index"
        # The kept composer is a send's: 8-bit bodies, as a local send writes them.
        assert all(b"Content-Transfer-Encoding: 8bit" in m.data for m in smtp_server.messages)
    finally:
        engine.dispose()


def test_two_workers_deliver_1000_digests_exactly_once(
    pg_url: str, smtp_server: SmtpTestServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    engine = connect(pg_url)
    workers = []
    try:
        emails = seed(engine, 1000)
        cfg = queue_config(tmp_path, pg_url, smtp_server, redis_server.url, batch_size=50)
        workers = [start_worker(cfg, "w1"), start_worker(cfg, "w2")]
        proc = newsletter(cfg, "send", "--now")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert "queued 1000 digest(s) in 20 batch(es)" in out
        statuses = wait_until_settled(engine, 1000)
        assert Counter(statuses) == Counter(sent=1000)
        assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
        assert len(smtp_server.messages) == 1000
        # Both workers took part: a sent row keeps the id (host:pid:…) of who sent it,
        # and each worker here is one child process.
        takers = {str(d.claimed_by).split(":")[1] for d in digests(engine)}
        assert len(takers) == 2, takers
        proc = newsletter(cfg, "status", "--json")
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        queue = json.loads(out[out.index("{") :])["queue"]
        assert queue["depth"] == 0
        assert sorted(name.split("@")[0] for name in queue["workers"]) == ["w1", "w2"]
    finally:
        for w in workers:
            stop(w)
        engine.dispose()


def _settle_ambiguous(engine: Engine, cfg: Path, emails: list[str], smtp: SmtpTestServer) -> None:
    """What the operator does after a kill: each ``sending`` row checked against the
    server and settled with ``resend``; then one more send queues what is left."""
    counts = smtp.per_recipient()
    for d in [d for d in digests(engine) if d.status == "sending"]:
        action = "--mark-sent" if counts[emails[d.subscriber_id - 1]] else "--send-again"
        proc = newsletter(cfg, "resend", str(d.id), action)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out


def _send(cfg: Path) -> str:
    proc = newsletter(cfg, "send", "--now")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out


def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(
    pg_url: str, smtp_server: SmtpTestServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    engine = connect(pg_url)
    workers = []
    try:
        emails = seed(engine, 60)
        cfg = queue_config(
            tmp_path,
            pg_url,
            smtp_server,
            redis_server.url,
            batch_size=20,
            lease_seconds=3,
            visibility_timeout=6,
        )
        smtp_server.handler.delay = 0.1  # room to kill in the middle of a batch
        first = start_worker(cfg, "w1")
        workers.append(first)
        _send(cfg)
        assert smtp_server.handler.wait_for(5, timeout=120), "the worker never got going"
        kill_hard(first)
        killed_at = len(smtp_server.messages)
        assert 5 <= killed_at < 60
        smtp_server.handler.delay = 0.0
        workers.append(start_worker(cfg, "w2"))
        # The killed task comes back from the broker after its visibility timeout and
        # claims what the dead worker held; the ambiguous row waits for the operator.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            left = [d.status for d in digests(engine) if d.status not in ("sent", "sending")]
            if not left:
                break
            time.sleep(0.5)
        rows = digests(engine)
        assert [d.status for d in rows].count("sending") <= 1
        assert {d.status for d in rows} <= {"sent", "sending"}
        assert max(smtp_server.per_recipient().values()) == 1
        _settle_ambiguous(engine, cfg, emails, smtp_server)
        _send(cfg)
        wait_until_settled(engine, 60, timeout=60)
        assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
        assert {d.status for d in digests(engine)} == {"sent"}
    finally:
        for w in workers:
            stop(w)
        engine.dispose()


def test_the_broker_killed_and_restarted_mid_send_loses_and_repeats_nothing(
    pg_url: str, smtp_server: SmtpTestServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    engine = connect(pg_url)
    workers = []
    try:
        emails = seed(engine, 80)
        cfg = queue_config(
            tmp_path,
            pg_url,
            smtp_server,
            redis_server.url,
            batch_size=10,
            lease_seconds=3,
            visibility_timeout=6,
        )
        smtp_server.handler.delay = 0.05
        workers = [start_worker(cfg, "w1"), start_worker(cfg, "w2")]
        _send(cfg)
        assert smtp_server.handler.wait_for(10, timeout=120), "the workers never got going"
        redis_server.kill()
        time.sleep(2)
        redis_server.start()  # same port, same append-only file: the queue is back
        smtp_server.handler.delay = 0.0
        statuses = wait_until_settled(engine, 80, timeout=180)
        assert Counter(statuses) == Counter(sent=80)
        assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
    finally:
        for w in workers:
            stop(w)
        engine.dispose()


def test_status_shows_who_holds_which_digests_and_the_failed_tasks(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    engine = connect(pg_url)
    try:
        seed(engine, 4)
        closed = free_port()  # nothing listens there: the task fails, and says why
        cfg = tmp_path / "newsletter.toml"
        cfg.write_text(
            f'[database]\nurl = "{pg_url}"\n[newsletter]\ndelivery = "smtp"\n'
            'base_url = "https://digest.example.org"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {closed}\nmax_attempts = 1\n'
            '[queue]\nbroker_url = "redis://127.0.0.1:6379/15"\n'
        )
        settings = load_settings(str(cfg))
        [batch] = plan_batches(engine, settings, SendOptions(force=True))
        result = make_app(settings).tasks[TASK_SEND_BATCH].apply(args=[batch])
        assert result.failed()
        with session_scope(engine) as session:
            claim_batch(
                session,
                "otherhost:4242:abcd",
                now=datetime.now(UTC),
                limit=3,
                lease=timedelta(minutes=5),
            )
        proc = newsletter(cfg, "status", "--json")
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        queue = json.loads(out[out.index("{") :])["queue"]
        assert queue["leases"] == [{"holder": "otherhost:4242:abcd", "pending": 3, "sending": 0}]
        [failed] = queue["failed_tasks"]
        assert failed["digests"] == 4 and "SMTP server unavailable" in failed["error"]
        proc = newsletter(cfg, "status")
        out, _ = proc.communicate(timeout=60)
        assert "Failed batch tasks" in out and "otherhost:4242:abcd" in out
    finally:
        engine.dispose()


def _rabbitmq_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbitmq_up(), reason="no RabbitMQ on 127.0.0.1:5672")
def test_two_workers_on_rabbitmq_deliver_each_digest_once(
    pg_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    engine = connect(pg_url)
    workers = []
    try:
        emails = seed(engine, 100)
        queue = f"newsletter-test-{tmp_path.name[-12:]}"  # a queue of this test's own
        cfg = queue_config(
            tmp_path,
            pg_url,
            smtp_server,
            "amqp://guest:guest@127.0.0.1:5672//",
            batch_size=10,
            queue=queue,
        )
        workers = [start_worker(cfg, "w1"), start_worker(cfg, "w2")]
        assert "queued 100 digest(s) in 10 batch(es)" in _send(cfg)
        assert Counter(wait_until_settled(engine, 100)) == Counter(sent=100)
        assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
    finally:
        for w in workers:
            stop(w)
        engine.dispose()
