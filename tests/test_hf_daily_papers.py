"""The Daily Papers JSON API as a source, against a real server on 127.0.0.1.

The pages are ``../shared/fixtures/hf-api/`` served for ``?date=`` days: one paper per
arXiv id across days and across an Atom feed of the same papers; a later page's upvotes
replace the stored ones; a bad day or a bad item never costs the others.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from newsletter.config import ConfigError, Settings, settings_from_mapping
from newsletter.db import session_scope
from newsletter.db.candidates import load_candidates
from newsletter.ingest import parse_daily_papers
from newsletter.models import Entry, Feed, FeedDay
from newsletter.pipeline.fetch import fetch_feeds
from tests.conftest import SHARED
from tests.support.feeds import Item, atom
from tests.support.http import FeedServer, Route

HF = SHARED / "fixtures" / "hf-api"
T0 = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=5)
T2 = T0 + timedelta(hours=9)
DAYS = {"2026-01-08": "daily_papers-000.json", "2026-01-09": "daily_papers-001.json"}
DAYS["2026-01-10"] = "daily_papers-002.json"
UA = "newsletter-tests/1.0 (+https://example.invalid/tests)"


def _page(name: str) -> bytes:
    return (HF / name).read_bytes()


def _items(name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(_page(name))
    return items


def _serve(server: FeedServer, pages: dict[str, str | bytes | Route]) -> str:
    for day, page in pages.items():
        route = (
            page
            if isinstance(page, Route)
            else Route(
                body=page if isinstance(page, bytes) else _page(page),
                content_type="application/json",
            )
        )
        server.route(f"/api/daily_papers?date={day}", route)
    return server.url("/api/daily_papers")


def _settings(tmp_path: Path, feeds: list[dict[str, Any]], **fetch: Any) -> Settings:
    return settings_from_mapping(
        {"feeds": feeds, "fetch": {"user_agent": UA, "timeout_seconds": 5, **fetch}},
        base_dir=tmp_path,
    )


def _hf(url: str, days: int = 2) -> dict[str, Any]:
    return {"name": "hf", "type": "hf-daily-papers", "url": url, "days": days}


def _entries(engine: Engine) -> dict[str, Entry]:
    with session_scope(engine) as s:
        rows = list(s.scalars(select(Entry)))
        for r in rows:
            s.expunge(r)
    return {r.dedupe_key: r for r in rows}


def _feed(engine: Engine, name: str) -> Feed:
    with session_scope(engine) as s:
        feed = s.scalars(select(Feed).where(Feed.name == name)).one()
        s.expunge(feed)
        return feed


def _ids(*names: str) -> set[str]:
    return {it["paper"]["id"] for n in names for it in _items(n)}


def test_listing_days_are_fetched_and_each_paper_stored_once(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = _serve(feed_server, dict(DAYS))
    report = fetch_feeds(engine, _settings(tmp_path, [_hf(url)]), now=T0)

    (feed,) = report.feeds
    assert (feed.status, feed.message) == ("ok", None)
    assert {s.path for s in feed_server.requests} == {f"/api/daily_papers?date={d}" for d in DAYS}
    stored = _entries(engine)
    expected = _ids(*DAYS.values())
    assert set(stored) == {f"arxiv:{i}" for i in expected}
    assert feed.new == len(expected)

    # 2310.58203 is listed on all three days: one entry, its first listing day kept.
    paper = next(it["paper"] for it in _items("daily_papers-000.json"))
    e = stored[f"arxiv:{paper['id']}"]
    assert e.authors == [a["name"] for a in paper["authors"]]
    assert e.title == paper["title"]
    assert e.link == f"https://huggingface.co/papers/{paper['id']}"
    assert e.extra["arxiv:abs"] == f"https://arxiv.org/abs/{paper['id']}"
    assert e.extra["arxiv:pdf"] == f"https://arxiv.org/pdf/{paper['id']}"
    assert e.extra["hf:comments"] == str(_items("daily_papers-000.json")[0]["numComments"])
    assert e.listed_at == datetime(2026, 1, 8, tzinfo=UTC)
    assert (e.upvotes, e.upvotes_at) == (paper["upvotes"], T0)
    # ... and the stored paper, as the email sees it, carries the comment count.
    with session_scope(engine) as s:
        (a,) = [a for a in load_candidates(s, since=T0 - timedelta(1), until=T0) if a.id == e.id]
    assert a.comments == _items("daily_papers-000.json")[0]["numComments"]


def test_a_later_read_replaces_the_upvotes(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = _serve(feed_server, dict(DAYS))
    settings = _settings(tmp_path, [_hf(url)])
    fetch_feeds(engine, settings, now=T0)
    before = _entries(engine)

    _serve(feed_server, {"2026-01-09": "daily_papers-001-later.json"})
    report = fetch_feeds(engine, settings, now=T1)
    after = _entries(engine)
    later = {
        it["paper"]["id"]: it["paper"]["upvotes"] for it in _items("daily_papers-001-later.json")
    }
    others = {
        it["paper"]["id"]: it["paper"]["upvotes"]
        for n in ("daily_papers-000.json", "daily_papers-002.json")
        for it in _items(n)
    }
    changed = 0
    for pid, votes in later.items():
        e = after[f"arxiv:{pid}"]
        # Read from two pages at the same moment: the higher count is the fresher one.
        assert e.upvotes == max(votes, others.get(pid, -1))
        assert e.upvotes_at == T1
        changed += e.upvotes != before[f"arxiv:{pid}"].upvotes
    assert changed > 0 and report.feeds[0].updated == changed
    assert after["arxiv:2406.86858"].upvotes == 24  # 0 on the first read

    # The latest read wins even when it is lower (a retracted vote), not the highest ever.
    _serve(feed_server, {"2026-01-09": "daily_papers-001.json"})
    fetch_feeds(engine, settings, now=T2)
    assert _entries(engine)["arxiv:2406.86858"].upvotes == 0


def test_an_atom_feed_of_the_same_papers_joins_the_same_entries(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = _serve(feed_server, dict(DAYS))
    papers = [it["paper"] for it in _items("daily_papers-000.json")]
    doc = atom(
        *(
            Item(
                title=p["title"],
                id=f"oai:arXiv.org:{p['id']}v2",
                link=f"https://arxiv.org/abs/{p['id']}v2",
                categories=["cs.LG"],
            )
            for p in papers
        )
    )
    feed_url = feed_server.route("/arxiv.atom", Route(body=doc))
    settings = _settings(tmp_path, [{"name": "arxiv", "url": feed_url}, _hf(url)])
    report = fetch_feeds(engine, settings, now=T0)

    arxiv, hf = report.feeds
    assert (arxiv.new, hf.new) == (len(papers), len(_ids(*DAYS.values())) - len(papers))
    stored = _entries(engine)
    assert len(stored) == len(_ids(*DAYS.values()))
    e = stored[f"arxiv:{papers[0]['id']}"]
    assert e.categories == ["cs.LG"]  # from the Atom copy
    assert e.authors == [a["name"] for a in papers[0]["authors"]]  # from Hugging Face


def test_a_failed_day_is_recorded_and_the_other_days_stored(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = _serve(
        feed_server,
        {
            "2026-01-08": Route(status=500, body=b"oops", content_type="text/plain"),
            "2026-01-09": b'[{"paper": {"id": "2401.00001", "title": "Cut o',
            "2026-01-10": "daily_papers-002.json",
        },
    )
    report = fetch_feeds(engine, _settings(tmp_path, [_hf(url)]), now=T0)

    (feed,) = report.feeds
    assert feed.status == "warning"
    assert feed.message is not None
    assert "2026-01-08: HTTP 500" in feed.message
    assert "2026-01-09: malformed JSON" in feed.message
    assert set(_entries(engine)) == {f"arxiv:{i}" for i in _ids("daily_papers-002.json")}
    stored = _feed(engine, "hf")
    assert (stored.last_status, stored.last_error) == ("warning", feed.message)


def test_every_day_failing_is_an_error_for_the_feed_only(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.url("/api/daily_papers")  # nothing routed: 404 for every day
    other = feed_server.route("/ok.atom", Route(body=atom(Item(title="Still here", id="x"))))
    report = fetch_feeds(
        engine, _settings(tmp_path, [_hf(url), {"name": "ok", "url": other}]), now=T0
    )
    hf, ok = report.feeds
    assert hf.status == "error" and hf.message and "every listing day failed" in hf.message
    assert hf.http_status == 404
    assert (ok.status, ok.new) == ("ok", 1)


def test_bad_items_are_skipped_and_named(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    good = _items("daily_papers-000.json")[0]
    many = [{"_id": str(n), "name": f"Author {n}", "hidden": False} for n in range(5000)]
    huge = {**good, "paper": {**good["paper"], "id": "2401.00002", "authors": many}}
    votes = {**good, "paper": {**good["paper"], "id": "2401.00003", "upvotes": "lots"}}
    extra = {**good, "unknownField": {"x": 1}, "paper": {**good["paper"], "newField": [1]}}
    page = [{"title": "no paper object"}, "not even an object", huge, votes, extra]
    url = _serve(feed_server, {"2026-01-10": json.dumps(page).encode()})
    report = fetch_feeds(engine, _settings(tmp_path, [_hf(url, days=0)]), now=T0)

    (feed,) = report.feeds
    assert feed.status == "warning" and feed.message
    assert "2 item(s) skipped (first: item 1: no paper object)" in feed.message
    stored = _entries(engine)
    assert set(stored) == {"arxiv:2401.00002", "arxiv:2401.00003", f"arxiv:{good['paper']['id']}"}
    big = stored["arxiv:2401.00002"]
    assert len(big.authors) == 50 and big.extra["hf:authors"] == "5000"
    assert stored["arxiv:2401.00003"].upvotes is None  # unknown, not zero


def test_a_body_over_the_size_limit_is_that_days_error(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    big = b"[" + b" " * (50 * 1024 * 1024) + b"]"
    url = _serve(feed_server, {"2026-01-09": big, "2026-01-10": "daily_papers-002.json"})
    settings = _settings(tmp_path, [_hf(url, days=1)], max_bytes=2_000_000)
    (feed,) = fetch_feeds(engine, settings, now=T0).feeds
    assert feed.status == "warning" and feed.message
    assert "2026-01-09: larger than fetch.max_bytes (2000000 bytes)" in feed.message
    assert feed.new == len(_ids("daily_papers-002.json"))


def test_a_local_json_file_is_read_as_today(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "papers.json"
    path.write_bytes(_page("daily_papers-000.json"))
    settings = _settings(
        tmp_path, [{"name": "hf", "type": "hf-daily-papers", "url": "papers.json"}]
    )
    (feed,) = fetch_feeds(engine, settings, now=T0).feeds
    assert (feed.status, feed.new) == ("ok", len(_ids("daily_papers-000.json")))
    assert {e.listed_at for e in _entries(engine).values()} == {datetime(2026, 1, 10, tzinfo=UTC)}


def test_parse_rejects_a_document_that_is_not_a_list() -> None:
    from newsletter.errors import FeedError

    with pytest.raises(FeedError, match="expected a JSON array"):
        parse_daily_papers(b'{"error": "rate limited"}', listed=T0.date(), now=T0)


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"type": "rss-ish"}, "expected one of feed, hf-daily-papers"),
        ({"type": "hf-daily-papers", "days": 99}, "from 0 to 30"),
        ({"days": 2, "url": "x.atom"}, "hf-daily-papers"),
    ],
)
def test_config_checks_the_type_and_days(
    tmp_path: Path, feed: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping({"feeds": [{"name": "f", **feed}]}, base_dir=tmp_path)


def test_the_default_url_is_the_public_api(tmp_path: Path) -> None:
    s = settings_from_mapping(
        {"feeds": [{"name": "hf", "type": "hf-daily-papers"}]}, base_dir=tmp_path
    )
    (f,) = s.feeds
    assert (f.url, f.days, f.type) == (
        "https://huggingface.co/api/daily_papers",
        3,
        "hf-daily-papers",
    )


def test_entry_count_matches_the_database(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    url = _serve(feed_server, dict(DAYS))
    settings = _settings(tmp_path, [_hf(url)])
    fetch_feeds(engine, settings, now=T0)
    again = fetch_feeds(engine, settings, now=T1)
    with session_scope(engine) as s:
        n = s.scalar(select(func.count(Entry.id)))
    assert again.feeds[0].new == 0 and n == len(_ids(*DAYS.values()))


def _conditional(server: FeedServer, path: str) -> list[dict[str, str]]:
    """The validators each request for ``path`` carried (empty for a full GET)."""
    names = ("if-none-match", "if-modified-since")
    return [{k: v for k, v in s.headers.items() if k in names} for s in server.seen(path)]


def test_each_listing_day_keeps_its_own_validators(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    """One day unchanged answers 304 to its own validators while another day is read."""
    day9, day10 = "/api/daily_papers?date=2026-01-09", "/api/daily_papers?date=2026-01-10"
    modified = "Fri, 09 Jan 2026 23:00:00 GMT"
    url = _serve(
        feed_server,
        {
            "2026-01-09": Route(
                body=_page("daily_papers-001.json"),
                content_type="application/json",
                last_modified=modified,
            ),
            "2026-01-10": Route(
                body=_page("daily_papers-002.json"), content_type="application/json", etag='"a"'
            ),
        },
    )
    settings = _settings(tmp_path, [_hf(url, days=1)])
    fetch_feeds(engine, settings, now=T0)
    assert _conditional(feed_server, day9) == [{}] and _conditional(feed_server, day10) == [{}]

    # Day 10 changes (one paper gains votes, a new ETag); day 9 does not.
    items = _items("daily_papers-002.json")
    only10 = _ids("daily_papers-002.json") - _ids("daily_papers-001.json")
    bumped = next(it for it in items if it["paper"]["id"] in only10)
    bumped["paper"]["upvotes"] += 1000
    feed_server.route(
        day10, Route(body=json.dumps(items).encode(), content_type="application/json", etag='"b"')
    )
    (feed,) = fetch_feeds(engine, settings, now=T1).feeds
    assert _conditional(feed_server, day9)[1] == {"if-modified-since": modified}
    assert _conditional(feed_server, day10)[1] == {"if-none-match": '"a"'}
    assert (feed.status, feed.message, feed.new, feed.updated) == ("ok", None, 0, 1)
    stored = _entries(engine)
    e = stored[f"arxiv:{bumped['paper']['id']}"]
    assert (e.upvotes, e.upvotes_at) == (bumped["paper"]["upvotes"], T1)
    only9 = _ids("daily_papers-001.json") - _ids("daily_papers-002.json")
    assert {stored[f"arxiv:{i}"].upvotes_at for i in only9} == {T0}  # the 304 day: kept

    # Nothing changed: both days 304, each to its own validators, and nothing stored.
    (feed,) = fetch_feeds(engine, settings, now=T2).feeds
    assert _conditional(feed_server, day9)[2] == {"if-modified-since": modified}
    assert _conditional(feed_server, day10)[2] == {"if-none-match": '"b"'}
    assert (feed.status, feed.new, feed.updated, feed.http_status) == ("not-modified", 0, 0, 304)
    assert _feed(engine, "hf").last_status == "not-modified"
    conditional = [
        s
        for s in feed_server.requests
        if "if-none-match" in s.headers or "if-modified-since" in s.headers
    ]
    assert len(conditional) == 4
    with session_scope(engine) as s:
        kept = {d.url: (d.etag, d.last_modified) for d in s.scalars(select(FeedDay))}
    assert kept == {
        url + "?date=2026-01-09": (None, modified),
        url + "?date=2026-01-10": ('"b"', None),
    }


def test_a_failed_day_keeps_the_validators_of_what_is_stored(
    engine: Engine, feed_server: FeedServer, tmp_path: Path
) -> None:
    """A failed read leaves a day's validators as they were: they still describe what is
    stored, so a 304 to them is right, and a changed page is read in full."""
    day10 = "/api/daily_papers?date=2026-01-10"
    page = _page("daily_papers-002.json")
    url = _serve(
        feed_server,
        {"2026-01-10": Route(body=page, content_type="application/json", etag='"a"')},
    )
    settings = _settings(tmp_path, [_hf(url, days=0)])
    fetch_feeds(engine, settings, now=T0)
    feed_server.route(day10, Route(body=b"[{", content_type="application/json", etag='"b"'))
    (bad,) = fetch_feeds(engine, settings, now=T1).feeds  # If-None-Match "a": 200, malformed
    assert bad.status == "error" and bad.message and "malformed JSON" in bad.message
    feed_server.route(day10, Route(body=page, content_type="application/json", etag='"b"'))
    (feed,) = fetch_feeds(engine, settings, now=T2).feeds
    assert _conditional(feed_server, day10) == [
        {},
        {"if-none-match": '"a"'},
        {"if-none-match": '"a"'},
    ]
    assert feed.status == "ok" and feed.unchanged == len(_ids("daily_papers-002.json"))
    (again,) = fetch_feeds(engine, settings, now=T2 + timedelta(hours=1)).feeds
    assert _conditional(feed_server, day10)[-1] == {"if-none-match": '"b"'}
    assert again.status == "not-modified"
