"""Polite HTTP against a real server on 127.0.0.1: conditional GET, redirects, failures."""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.models import Entry, Feed
from newsletter.pipeline.fetch import FetchReport, fetch_feeds
from tests.support.feeds import Item, atom, settings_for
from tests.support.http import FeedServer, Route

T0 = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
UA = "newsletter-tests/1.0 (+https://example.invalid/tests)"
LAST_MODIFIED = "Sat, 10 Jan 2026 05:00:00 GMT"

DOC = atom(
    Item(title="First paper", id="p1", link="https://example.org/p1"),
    Item(title="Second paper", id="p2", link="https://example.org/p2"),
)


def _settings(tmp_path: Path, feeds: dict[str, str], **fetch: Any) -> Settings:
    return settings_for(
        feeds, tmp_path, fetch={"user_agent": UA, "timeout_seconds": 5, "workers": 2, **fetch}
    )


def _feed(engine: Engine, name: str) -> Feed:
    with session_scope(engine) as s:
        feed = s.scalars(select(Feed).where(Feed.name == name)).one()
        s.expunge(feed)
        return feed


def _entries(engine: Engine) -> int:
    with session_scope(engine) as s:
        return int(s.scalar(select(func.count(Entry.id))) or 0)


def _by_name(report: FetchReport) -> dict[str, Any]:
    return {f.name: f for f in report.feeds}


def test_etag_round_trip_and_304_stores_nothing(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.route("/feed", Route(body=DOC, etag='"v1"'))
    settings = _settings(tmp_path, {"f": url})

    first = fetch_feeds(engine, settings, now=T0)
    assert (first.feeds[0].status, first.feeds[0].new) == ("ok", 2)
    assert _feed(engine, "f").etag == '"v1"'

    second = fetch_feeds(engine, settings, now=T1)
    report = second.feeds[0]
    assert (report.status, report.new, report.updated, report.unchanged) == (
        "not-modified",
        0,
        0,
        0,
    )
    requests = feed_server.seen("/feed")
    assert requests[0].headers["user-agent"] == UA
    assert "if-none-match" not in requests[0].headers
    assert requests[1].headers["if-none-match"] == '"v1"'
    feed = _feed(engine, "f")
    assert (feed.last_status, feed.last_http_status, feed.etag) == ("not-modified", 304, '"v1"')
    assert feed.last_fetched_at == T1 and feed.last_success_at == T1
    assert _entries(engine) == 2


def test_last_modified_round_trip(engine: Engine, feed_server: FeedServer, tmp_path: Path) -> None:
    url = feed_server.route("/feed", Route(body=DOC, last_modified=LAST_MODIFIED))
    settings = _settings(tmp_path, {"f": url})
    fetch_feeds(engine, settings, now=T0)
    assert _feed(engine, "f").last_modified == LAST_MODIFIED

    report = fetch_feeds(engine, settings, now=T1).feeds[0]
    assert report.status == "not-modified"
    assert feed_server.seen("/feed")[1].headers["if-modified-since"] == LAST_MODIFIED

    # The feed changes: a full response again, with the new validator stored.
    feed_server.routes["/feed"] = Route(
        body=atom(Item(title="Third", id="p3", link="https://example.org/p3")),
        last_modified="Sat, 10 Jan 2026 07:00:00 GMT",
    )
    report = fetch_feeds(engine, settings, now=T2).feeds[0]
    assert (report.status, report.new) == ("ok", 1)
    assert _feed(engine, "f").last_modified == "Sat, 10 Jan 2026 07:00:00 GMT"
    assert _entries(engine) == 3


@pytest.mark.parametrize("code", [301, 308])
def test_permanent_redirect_updates_the_stored_url(
    engine: Engine, feed_server: FeedServer, tmp_path: Path, code: int
) -> None:
    old = feed_server.route("/old", Route(status=code, headers={"Location": "/new"}))
    new = feed_server.route("/new", Route(body=DOC))
    settings = _settings(tmp_path, {"f": old})

    report = fetch_feeds(engine, settings, now=T0).feeds[0]
    assert (report.status, report.new, report.moved_to) == ("ok", 2, new)
    feed = _feed(engine, "f")
    assert (feed.url, feed.configured_url) == (new, old)

    fetch_feeds(engine, settings, now=T1)
    assert len(feed_server.seen("/old")) == 1  # the next fetch goes straight to /new
    assert len(feed_server.seen("/new")) == 2


@pytest.mark.parametrize("code", [302, 307])
def test_temporary_redirect_keeps_the_url(
    engine: Engine, feed_server: FeedServer, tmp_path: Path, code: int
) -> None:
    old = feed_server.route("/old", Route(status=code, headers={"Location": "/new"}))
    feed_server.route("/new", Route(body=DOC))
    report = fetch_feeds(engine, _settings(tmp_path, {"f": old}), now=T0).feeds[0]
    assert (report.status, report.new, report.moved_to) == ("ok", 2, None)
    assert _feed(engine, "f").url == old


def test_permanent_redirect_after_a_temporary_one_does_not_move_the_feed(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    start = feed_server.route("/a", Route(status=302, headers={"Location": "/b"}))
    feed_server.route("/b", Route(status=301, headers={"Location": "/c"}))
    feed_server.route("/c", Route(body=DOC))
    fetch_feeds(engine, _settings(tmp_path, {"f": start}), now=T0)
    assert _feed(engine, "f").url == start


def test_redirect_loop_is_an_error(engine: Engine, feed_server: FeedServer, tmp_path: Path) -> None:
    url = feed_server.route("/loop", Route(status=302, headers={"Location": "/loop"}))
    report = fetch_feeds(engine, _settings(tmp_path, {"f": url}), now=T0).feeds[0]
    assert report.status == "error" and "redirects" in (report.message or "")


def test_410_gone_disables_the_feed(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.route("/feed", Route(body=DOC))
    settings = _settings(tmp_path, {"f": url})
    fetch_feeds(engine, settings, now=T0)

    feed_server.routes["/feed"] = Route(status=410, body=b"gone")
    report = fetch_feeds(engine, settings, now=T1)
    assert report.feeds[0].status == "gone" and not report.ok
    feed = _feed(engine, "f")
    assert (feed.enabled, feed.last_status, feed.last_http_status) == (False, "gone", 410)
    assert feed.last_error and "410" in feed.last_error
    assert _entries(engine) == 2  # what was stored stays

    later = fetch_feeds(engine, settings, now=T2)
    assert later.feeds == ()  # disabled: not fetched again
    assert len(feed_server.seen("/feed")) == 2


def test_500_is_recorded_and_the_other_feeds_are_still_fetched(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    good = feed_server.route("/good", Route(body=DOC, etag='"g"'))
    flaky = feed_server.route(
        "/flaky", Route(body=atom(Item(title="Kept", id="k", link="https://example.org/k")))
    )
    settings = _settings(tmp_path, {"flaky": flaky, "good": good})
    fetch_feeds(engine, settings, now=T0)
    feed_server.routes["/flaky"] = Route(status=500, body=b"boom")

    report = fetch_feeds(engine, settings, now=T1)
    by_name = _by_name(report)
    assert by_name["flaky"].status == "error"
    assert by_name["flaky"].message == "HTTP 500 Internal Server Error"
    assert by_name["good"].status == "not-modified"
    assert report.failed == 1 and not report.ok

    fetch_feeds(engine, settings, now=T2)
    flaky_feed = _feed(engine, "flaky")
    assert flaky_feed.consecutive_errors == 2
    assert flaky_feed.last_status == "error" and flaky_feed.last_http_status == 500
    assert flaky_feed.last_success_at == T0  # nothing stored is lost
    assert flaky_feed.enabled
    assert _entries(engine) == 3

    feed_server.routes["/flaky"] = Route(body=DOC)
    fetch_feeds(engine, settings, now=T2)
    assert _feed(engine, "flaky").consecutive_errors == 0


def test_timeout_is_an_error(engine: Engine, feed_server: FeedServer, tmp_path: Path) -> None:
    slow = feed_server.route("/slow", Route(stall=True))
    fast = feed_server.route("/fast", Route(body=DOC))
    settings = _settings(tmp_path, {"slow": slow, "fast": fast}, timeout_seconds=0.3)
    report = _by_name(fetch_feeds(engine, settings, now=T0))
    assert report["slow"].status == "error"
    assert re.fullmatch(r"timed out after 0\.[3-9] s", report["slow"].message)
    assert (report["fast"].status, report["fast"].new) == ("ok", 2)
    assert _feed(engine, "slow").last_error == report["slow"].message


def test_truncated_response_is_an_error(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.route("/cut", Route(body=DOC, truncate_to=len(DOC) // 2))
    report = fetch_feeds(engine, _settings(tmp_path, {"f": url}), now=T0).feeds[0]
    assert report.status == "error"
    assert report.message == f"truncated response ({len(DOC) // 2} of {len(DOC)} bytes)"
    assert _entries(engine) == 0


def test_connection_refused_is_an_error(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.url("/feed")
    feed_server.stop()
    report = fetch_feeds(engine, _settings(tmp_path, {"f": url}), now=T0).feeds[0]
    assert report.status == "error"
    assert (report.message or "").startswith("network error")


def test_404_and_html_pages_are_errors(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    page = feed_server.route(
        "/page", Route(body=b"<html><body>Hello</body></html>", content_type="text/html")
    )
    missing = feed_server.url("/missing")
    report = _by_name(
        fetch_feeds(engine, _settings(tmp_path, {"page": page, "missing": missing}), now=T0)
    )
    assert report["missing"].message == "HTTP 404 Not Found"
    assert report["page"].status == "error"
    assert (report["page"].message or "").startswith("not a feed")


def test_gzip_body_and_charset_from_content_type(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    latin = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        b"<item><title>Caf\xe9</title><link>https://example.org/cafe</link></item>"
        b"</channel></rss>"
    )
    url = feed_server.route(
        "/gz",
        Route(
            body=gzip.compress(latin),
            content_type="application/rss+xml; charset=iso-8859-1",
            headers={"Content-Encoding": "gzip"},
        ),
    )
    report = fetch_feeds(engine, _settings(tmp_path, {"f": url}), now=T0).feeds[0]
    assert (report.status, report.new) == ("ok", 1)
    assert feed_server.seen("/gz")[0].headers["accept-encoding"] == "gzip, deflate"
    with session_scope(engine) as s:
        assert s.scalars(select(Entry.title)).one() == "Café"


def test_body_over_the_size_limit_is_refused(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.route("/big", Route(body=DOC))
    settings = _settings(tmp_path, {"f": url}, max_bytes=100)
    report = fetch_feeds(engine, settings, now=T0).feeds[0]
    assert report.status == "error" and "max_bytes" in (report.message or "")


def test_relative_links_resolve_against_the_final_url(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    doc = (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        b"<item><title>Rel</title><link>papers/42</link><guid>rel-1</guid></item>"
        b"</channel></rss>"
    )
    start = feed_server.route("/old/", Route(status=302, headers={"Location": "/feeds/"}))
    feed_server.route("/feeds/", Route(body=doc))
    fetch_feeds(engine, _settings(tmp_path, {"f": start}), now=T0)
    with session_scope(engine) as s:
        assert s.scalars(select(Entry.link)).one() == feed_server.url("/feeds/papers/42")
