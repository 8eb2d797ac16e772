"""Metrics an operator scrapes: ``/metrics`` on the web app and the node_exporter
textfile of ``run``/``send``, both read from the database, parsed with prometheus_client."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from newsletter.config import settings_from_mapping
from newsletter.db import connect, session_scope
from newsletter.models import Digest, DigestEntry, Entry, Feed
from newsletter.scheduler import DigestScheduler
from newsletter.web import create_app
from tests.support.queue import RedisServer
from tests.support.sending import add_subscribers, cli_env, write_config
from tests.support.smtp import SmtpTestServer

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC).replace(microsecond=0)
SENT_AT = NOW - timedelta(hours=2)
FETCHED_AT = NOW - timedelta(minutes=30)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def seed(engine: Engine) -> None:
    """Two feeds (one failing), and digests in every state, with known attempts."""
    ada, grace, alan, edsger, barbara, ken = add_subscribers(
        engine, [f"{n}@example.org" for n in ("ada", "grace", "alan", "edsger", "barbara", "ken")]
    )
    with session_scope(engine) as s:
        good = Feed(
            name="papers",
            url="https://example.org/a",
            configured_url="https://example.org/a",
            last_fetched_at=FETCHED_AT,
            last_success_at=FETCHED_AT,
            last_status="ok",
            consecutive_errors=0,
        )
        bad = Feed(
            name="blog",
            url="https://example.org/b",
            configured_url="https://example.org/b",
            last_fetched_at=FETCHED_AT,
            last_success_at=FETCHED_AT - timedelta(days=2),
            last_status="error",
            consecutive_errors=3,
        )
        s.add_all([good, bad])
        s.flush()
        entry = Entry(
            dedupe_key="k1", feed_id=good.id, title="t", published_at=NOW, first_seen_at=NOW
        )
        s.add(entry)
        s.flush()

        def digest(sub: int, status: str, attempts: int, **kw: object) -> Digest:
            d = Digest(subscriber_id=sub, period="2026-06-15", status=status, attempts=attempts)
            for k, v in kw.items():
                setattr(d, k, v)
            s.add(d)
            return d

        sent = digest(ada, "sent", 3, sent_at=SENT_AT)
        digest(grace, "failed", 5, error="550 no such user")
        digest(alan, "pending", 2, next_attempt_at=NOW + timedelta(minutes=5))
        digest(edsger, "skipped", 0)
        # Left in 'sending' by a worker whose lease ran out: ambiguous.
        digest(barbara, "sending", 0, claimed_by="elsewhere:1:x", lease_until=NOW - timedelta(1))
        # Being sent right now by a live worker elsewhere: not ambiguous.
        digest(ken, "sending", 1, claimed_by="elsewhere:2:y", lease_until=NOW + timedelta(1))
        s.flush()
        s.add(DigestEntry(digest_id=sent.id, subscriber_id=ada, entry_id=entry.id))


def client(engine: Engine, tmp_path: Path, **metrics: str) -> FlaskClient:
    settings = settings_from_mapping({"metrics": metrics}, base_dir=tmp_path)
    return create_app(settings, engine, testing=True, secret=b"k" * 32).test_client()


def test_metrics_endpoint_reads_the_outbox_and_the_feeds(engine: Engine, tmp_path: Path) -> None:
    seed(engine)
    resp = client(engine, tmp_path).get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(resp.get_data(as_text=True))
    for status, n in {"sent": 1, "failed": 1, "pending": 1, "skipped": 1, "sending": 2}.items():
        assert got[("newsletter_digests", (("status", status),))] == n
    assert got[("newsletter_digests_ambiguous", ())] == 1
    assert got[("newsletter_digests_retry_waiting", ())] == 1
    # sent after 3 attempts: 2 retries; failed after 5: 4; pending after 2: 2; sending: 1.
    assert got[("newsletter_smtp_retries_total", ())] == 2 + 4 + 2 + 1
    assert got[("newsletter_last_send_timestamp_seconds", ())] == SENT_AT.timestamp()
    papers, blog = (("feed", "papers"),), (("feed", "blog"),)
    assert got[("newsletter_feed_up", papers)] == 1
    assert got[("newsletter_feed_up", blog)] == 0
    assert got[("newsletter_feed_consecutive_errors", blog)] == 3
    assert got[("newsletter_feed_last_fetch_timestamp_seconds", blog)] == FETCHED_AT.timestamp()
    assert (
        got[("newsletter_feed_last_success_timestamp_seconds", blog)]
        == (FETCHED_AT - timedelta(days=2)).timestamp()
    )
    assert got[("newsletter_feed_last_send_timestamp_seconds", papers)] == SENT_AT.timestamp()
    assert ("newsletter_feed_last_send_timestamp_seconds", blog) not in got  # nothing sent
    assert not any(name.startswith("newsletter_queue") for name, _ in got)  # no [queue]
    assert "example.org" not in resp.get_data(as_text=True).replace("https://example.org", "")


def test_an_empty_database_gives_zeros_not_an_error(sqlite_engine: Engine, tmp_path: Path) -> None:
    got = samples(client(sqlite_engine, tmp_path).get("/metrics").get_data(as_text=True))
    assert got[("newsletter_digests", (("status", "sent"),))] == 0
    assert got[("newsletter_smtp_retries_total", ())] == 0
    assert ("newsletter_last_send_timestamp_seconds", ()) not in got


def test_two_apps_on_one_database_report_the_same(sqlite_engine: Engine, tmp_path: Path) -> None:
    # Values come from the tables, not from one process's memory: a second worker agrees.
    seed(sqlite_engine)
    a = client(sqlite_engine, tmp_path).get("/metrics").get_data(as_text=True)
    b = client(sqlite_engine, tmp_path).get("/metrics").get_data(as_text=True)
    assert samples(a) == samples(b)


def test_a_metrics_token_is_required_when_configured(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = client(sqlite_engine, tmp_path, token_env="TEST_METRICS_TOKEN")
    assert c.get("/metrics").status_code == 503  # named but not set: closed, not open
    monkeypatch.setenv("TEST_METRICS_TOKEN", "s3cret-scrape-token")
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = c.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
    assert ok.status_code == 200
    assert ("newsletter_smtp_retries_total", ()) in samples(ok.get_data(as_text=True))


def test_send_writes_the_textfile_atomically(
    engine: Engine, db_url: str, tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    """``send`` (a subprocess, a process of its own) leaves a parseable textfile with the
    same names as /metrics, and no temporary file beside it."""
    shutil.copytree(ROOT / "examples" / "feeds", tmp_path / "feeds")
    cfg = write_config(tmp_path, db_url, smtp_server)
    prom = tmp_path / "textfile" / "newsletter.prom"
    with cfg.open("a") as f:
        f.write(f'[metrics]\ntextfile = "{prom}"\n')
        f.write('[[feeds]]\nname = "sample"\nurl = "feeds/daily-papers-000.atom"\n')
    env = cli_env()
    run = [sys.executable, "-m", "newsletter", "--config", str(cfg)]
    subprocess.run([*run, "fetch"], env=env, check=True, capture_output=True)
    add_subscribers(engine, ["ada@example.org"], keywords=["optimization"])
    done = subprocess.run([*run, "send", "--now"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(smtp_server.messages) == 1
    assert [p.name for p in prom.parent.iterdir()] == ["newsletter.prom"]
    got = samples(prom.read_text())
    assert got[("newsletter_digests", (("status", "sent"),))] == 1
    assert got[("newsletter_feed_up", (("feed", "sample"),))] == 1
    assert ("newsletter_feed_last_send_timestamp_seconds", (("feed", "sample"),)) in got
    web = samples(client(engine, tmp_path).get("/metrics").get_data(as_text=True))
    assert set(web) == set(got)


def test_run_once_writes_the_textfile(sqlite_engine: Engine, tmp_path: Path) -> None:
    prom = tmp_path / "newsletter.prom"
    settings = settings_from_mapping(
        {"newsletter": {"delivery": "preview"}, "metrics": {"textfile": str(prom)}},
        base_dir=tmp_path,
    )
    DigestScheduler(sqlite_engine, settings).once()
    assert ("newsletter_digests", (("status", "sent"),)) in samples(prom.read_text())


def test_queue_depth_where_a_queue_exists(
    pg_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    engine = connect(pg_url)
    try:
        settings = settings_from_mapping(
            {"database": {"url": pg_url}, "queue": {"broker_url": redis_server.url}},
            base_dir=tmp_path,
        )
        c = create_app(settings, engine, testing=True, secret=b"k" * 32).test_client()
        got = samples(c.get("/metrics").get_data(as_text=True))
        assert got[("newsletter_queue_up", ())] == 1
        assert got[("newsletter_queue_depth", ())] == 0
        redis_server.kill()
        down = samples(c.get("/metrics").get_data(as_text=True))
        assert down[("newsletter_queue_up", ())] == 0
        assert ("newsletter_queue_depth", ()) not in down
    finally:
        engine.dispose()
