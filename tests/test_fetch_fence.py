"""A send beside a fetch: entries are stamped ``first_seen_at`` when their feed is
downloaded but committed only after, so a window ending in between must stop before
that fetch began, or the next window starts past entries nobody saw. Real HTTP feed
server (held open by the test), real SMTP server, SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from newsletter.db import session_scope
from newsletter.db.candidates import window_end
from newsletter.db.runs import FETCH_FENCE_MAX_AGE, fetch_fence, start_run
from newsletter.models import Entry, Run
from newsletter.pipeline.fetch import fetch_feeds
from tests.support.feeds import Item, atom, settings_for
from tests.support.http import FeedServer, Route
from tests.support.sending import add_entries, add_subscribers, digests, utc
from tests.support.smtp import SmtpTestServer
from tests.test_outbox_carry import all_received, send

DAY0 = utc(2026, 6, 15, 9, 0)


def _wait_for_request(server: FeedServer, path: str) -> None:
    for _ in range(500):
        if server.seen(path):
            return
        time.sleep(0.01)
    raise AssertionError(f"the fetch never asked for {path}")


def test_a_send_during_a_slow_fetch_leaves_its_entries_to_the_next_digest(
    engine: Engine, smtp_server: SmtpTestServer, feed_server: FeedServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["a@example.org"])
    (early,) = add_entries(engine, ["Optimization early"], first_seen=DAY0 - timedelta(hours=2))
    gate = threading.Event()
    url = feed_server.route(
        "/slow.xml",
        Route(
            body=atom(Item("Optimization late", id="urn:x:late", link="https://e.org/late")),
            gate=gate,
        ),
    )
    fetched: list[object] = []
    fetch = threading.Thread(
        target=lambda: fetched.append(
            fetch_feeds(engine, settings_for({"slow": url}, tmp_path), now=DAY0)
        )
    )
    fetch.start()
    try:
        _wait_for_request(feed_server, "/slow.xml")  # stamped DAY0, not yet stored
        first = send(engine, smtp_server, tmp_path, DAY0 + timedelta(minutes=1))
    finally:
        gate.set()
        fetch.join(timeout=30)
    assert fetched, "the fetch did not finish"
    assert first.sent == 1
    (d1,) = digests(engine)
    assert d1.window_end is not None and d1.window_end < DAY0  # stopped before the fetch
    with session_scope(engine) as s:
        (late,) = s.scalars(select(Entry.id).where(Entry.title == "Optimization late"))

    second = send(engine, smtp_server, tmp_path, DAY0 + timedelta(days=1))
    assert second.sent == 1
    assert all_received(smtp_server, "a@example.org") == Counter({early: 1, late: 1})


def test_a_fetch_left_running_by_a_dead_process_or_long_ago_is_no_fence(
    engine: Engine,
) -> None:
    with session_scope(engine) as s:
        live = start_run(s, "fetch", now=DAY0)
    with session_scope(engine) as s:
        assert fetch_fence(s, now=DAY0 + timedelta(minutes=5)) == DAY0
        assert window_end(s, now=DAY0 + timedelta(minutes=5)) == DAY0 - timedelta(microseconds=1)
        # Older than any fetch can last: a crash on another machine, not a fetch.
        late = DAY0 + FETCH_FENCE_MAX_AGE + timedelta(seconds=1)
        assert fetch_fence(s, now=late) is None
        assert window_end(s, now=late) == late
        # Before the send's own moment only: a fetch that began later fences nothing.
        assert fetch_fence(s, now=DAY0 - timedelta(seconds=1)) is None

    # This host, a process that is gone (kill -9 leaves the row running).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    child = gone.pid
    with session_scope(engine) as s:
        row = s.get(Run, live)
        assert row is not None
        row.pid = child
    with session_scope(engine) as s:
        assert fetch_fence(s, now=DAY0 + timedelta(minutes=5)) is None
