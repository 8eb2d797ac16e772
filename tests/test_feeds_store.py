"""Storing entries: dedupe within a feed, across feeds and across arXiv versions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select, update

from newsletter.config import FeedSettings
from newsletter.db import session_scope
from newsletter.db.candidates import ArticleCache, load_candidates
from newsletter.db.entries import (
    entry_counts,
    record_fetch,
    store_entries,
    sync_feeds,
    to_article,
)
from newsletter.db.runs import last_run
from newsletter.domain import Article, ParsedEntry
from newsletter.models import Entry, EntrySource, Feed
from newsletter.pipeline.fetch import fetch_feeds
from tests.support.feeds import settings_for

T0 = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared/fixtures/feedparser-tests"


def _entry(guid: str, key: str, **kw: object) -> ParsedEntry:
    base = ParsedEntry(
        guid=guid,
        dedupe_key=key,
        title=f"Title {key}",
        summary="Abstract.",
        link=f"https://example.org/{key}",
        authors=("Ada Lovelace",),
        categories=("cs.LG",),
        published=datetime(2024, 1, 15, tzinfo=UTC),
        extra={},
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _two_feeds(engine: Engine) -> tuple[int, int]:
    with session_scope(engine) as s:
        feeds = sync_feeds(
            s, [FeedSettings("a", "https://a.example/feed"), FeedSettings("b", "/tmp/b.xml")]
        )
        return feeds["a"].id, feeds["b"].id


def _count(engine: Engine, model: type[Entry] | type[EntrySource]) -> int:
    with session_scope(engine) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_refetching_the_same_batch_adds_nothing(engine: Engine) -> None:
    a, _ = _two_feeds(engine)
    batch = [_entry("g1", "k1"), _entry("g2", "k2")]
    with session_scope(engine) as s:
        first = store_entries(s, a, batch, now=T0)
    with session_scope(engine) as s:
        again = store_entries(s, a, batch, now=T1)
    assert (first.new, first.updated, first.unchanged) == (2, 0, 0)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 2)
    assert _count(engine, Entry) == 2 and _count(engine, EntrySource) == 2
    with session_scope(engine) as s:
        assert set(s.scalars(select(Entry.first_seen_at))) == {T0}


def test_same_guid_updates_the_entry(engine: Engine) -> None:
    a, _ = _two_feeds(engine)
    with session_scope(engine) as s:
        store_entries(s, a, [_entry("g1", "k1", extra={"hf:upvotes": "3"})], now=T0)
    changed = _entry("g1", "k1", title="Better title", extra={"hf:upvotes": "9"})
    with session_scope(engine) as s:
        result = store_entries(s, a, [changed], now=T1)
    assert (result.new, result.updated) == (0, 1)
    with session_scope(engine) as s:
        e = s.scalars(select(Entry)).one()
        assert (e.title, e.upvotes, e.first_seen_at, e.updated_at) == ("Better title", 9, T0, T1)


def test_undated_entry_keeps_its_first_fetch_time(engine: Engine) -> None:
    a, _ = _two_feeds(engine)
    with session_scope(engine) as s:
        store_entries(s, a, [_entry("g1", "k1", published=T0)], now=T0)
    with session_scope(engine) as s:
        result = store_entries(s, a, [_entry("g1", "k1", published=T1)], now=T1)
    assert result.unchanged == 1
    with session_scope(engine) as s:
        assert s.scalars(select(Entry.published_at)).one() == T0


def test_same_paper_through_two_feeds_is_one_entry(engine: Engine) -> None:
    a, b = _two_feeds(engine)
    with session_scope(engine) as s:
        store_entries(s, a, [_entry("a-1", "url:https://example.org/p", categories=("x",))], now=T0)
    with session_scope(engine) as s:
        result = store_entries(
            s, b, [_entry("b-77", "url:https://example.org/p", categories=("y",))], now=T1
        )
    assert result.new == 0 and result.updated == 1  # the tag from b was added
    assert _count(engine, Entry) == 1 and _count(engine, EntrySource) == 2
    with session_scope(engine) as s:
        e = s.scalars(select(Entry)).one()
        assert e.feed_id == a and e.categories == ["x", "y"]
        assert entry_counts(s) == {a: 1, b: 1}


def test_new_arxiv_version_joins_the_entry(engine: Engine) -> None:
    a, _ = _two_feeds(engine)
    v1 = _entry("oai:arXiv.org:2401.01234v1", "arxiv:2401.01234", summary="First version.")
    v2 = _entry("oai:arXiv.org:2401.01234v2", "arxiv:2401.01234", summary="Revised version.")
    with session_scope(engine) as s:
        store_entries(s, a, [v1], now=T0)
    with session_scope(engine) as s:
        result = store_entries(s, a, [v2], now=T1)
    assert (result.new, result.updated) == (0, 1)
    with session_scope(engine) as s:
        e = s.scalars(select(Entry)).one()
        assert e.summary == "Revised version." and e.first_seen_at == T0
        assert len(s.scalars(select(EntrySource)).all()) == 2


def test_duplicates_inside_one_batch(engine: Engine) -> None:
    a, _ = _two_feeds(engine)
    batch = [
        _entry("g1", "k1"),
        _entry("g1", "k1", title="repeat of g1"),  # same guid twice: first copy wins
        _entry("v1", "arxiv:1"),
        _entry("v2", "arxiv:1"),  # two versions in one batch: one entry
    ]
    with session_scope(engine) as s:
        result = store_entries(s, a, batch, now=T0)
    assert (result.new, result.updated, result.unchanged) == (2, 1, 0)
    assert _count(engine, Entry) == 2 and _count(engine, EntrySource) == 3
    with session_scope(engine) as s:
        assert "repeat of g1" not in s.scalars(select(Entry.title)).all()


def test_bulk_batch_larger_than_one_chunk(engine: Engine) -> None:
    a, _ = _two_feeds(engine)
    batch = [_entry(f"g{i}", f"k{i}") for i in range(1200)]
    with session_scope(engine) as s:
        assert store_entries(s, a, batch, now=T0).new == 1200
    with session_scope(engine) as s:
        assert store_entries(s, a, batch, now=T1).unchanged == 1200


def test_to_article_carries_popularity_and_author_count(engine: Engine) -> None:
    a, _ = _two_feeds(engine)
    p = _entry("g", "k", extra={"hf:upvotes": "12", "hf:authors": "5"}, authors=())
    with session_scope(engine) as s:
        store_entries(s, a, [p], now=T0)
    with session_scope(engine) as s:
        article = to_article(s.scalars(select(Entry)).one(), feed_name="a")
    assert (article.upvotes, article.author_count, article.feed_name) == (12, 5, "a")
    assert (article.published, article.first_seen) == (p.published, T0)
    assert article.authors == () and article.categories == ("cs.LG",)


def test_sync_feeds_follows_the_config(engine: Engine) -> None:
    with session_scope(engine) as s:
        sync_feeds(s, [FeedSettings("a", "https://a.example/1"), FeedSettings("b", "/b.xml")])
    with session_scope(engine) as s:
        record_fetch(s, s.scalars(select(Feed.id).where(Feed.name == "a")).one(),
                     status="gone", now=T0, http_status=410, message="gone")  # fmt: skip
    with session_scope(engine) as s:
        feeds = sync_feeds(s, [FeedSettings("a", "https://a.example/1")])
        assert not feeds["a"].enabled  # a 410 is not forgotten on the next run
    with session_scope(engine) as s:
        feeds = sync_feeds(s, [FeedSettings("a", "https://a.example/2")])
        a = feeds["a"]
        assert (a.enabled, a.url, a.configured_url, a.last_status) == (
            True,
            "https://a.example/2",
            "https://a.example/2",
            None,
        )
        b = s.scalars(select(Feed).where(Feed.name == "b")).one()
        assert not b.enabled  # left the config


def test_whole_feedparser_corpus_ingests(engine: Engine, tmp_path: Path) -> None:
    """Every broken, oddly encoded and hostile feed of feedparser's corpus: no escape."""
    files = sorted(CORPUS.rglob("*.xml"))
    assert len(files) > 700, f"corpus missing at {CORPUS}"
    feeds = {str(p.relative_to(CORPUS)): str(p) for p in files}
    settings = settings_for(feeds, tmp_path, fetch={"workers": 2})
    report = fetch_feeds(engine, settings, now=T0)
    assert len(report.feeds) == len(files)
    statuses = {f.status for f in report.feeds}
    assert statuses <= {"ok", "warning", "error"}
    errors = [f for f in report.feeds if f.status == "error"]
    assert all((f.message or "").startswith("not a feed") for f in errors), errors[:3]
    # Many corpus entries share a link or a title, so they dedupe into fewer entries;
    # every (feed, guid) is still recorded as a source.
    seen = report.new + report.updated + report.unchanged
    assert seen > 150 and report.new > 20
    assert _count(engine, EntrySource) == seen
    with session_scope(engine) as s:
        texts = s.execute(select(Entry.title, Entry.summary)).all()
        assert len(texts) == report.new
        for title, summary in texts:
            assert "<script" not in title.lower() and "<script" not in summary.lower()
    again = fetch_feeds(engine, settings, now=T1)
    assert again.new == 0
    with session_scope(engine) as s:
        run = last_run(s, "fetch")
        assert run is not None and run.summary["totals"]["feeds"] == len(files)


def test_the_article_cache_decodes_only_new_or_changed_entries(engine: Engine) -> None:
    # Composing keeps one ArticleCache per process: each batch of a send loads the
    # same pool again, and must see every change a fetch made meanwhile.
    a, _ = _two_feeds(engine)
    since, until = T0 - timedelta(days=1), T1 + timedelta(days=1)
    cache = ArticleCache()

    def both() -> tuple[list[Article], list[Article]]:
        with session_scope(engine) as s:
            cached = load_candidates(s, since=since, until=until, cache=cache)
            plain = load_candidates(s, since=since, until=until)
        return cached, plain

    with session_scope(engine) as s:
        store_entries(s, a, [_entry(f"g{i}", f"k{i}") for i in range(3)], now=T0)
    first, plain = both()
    assert first == plain and len(first) == 3 and len(cache) == 3
    again, _ = both()
    assert all(x is y for x, y in zip(again, first, strict=True))  # nothing decoded again

    with session_scope(engine) as s:  # new upvotes for g1, a new entry, a renamed feed
        store_entries(s, a, [_entry("g1", "k1", extra={"hf:upvotes": "7"})], now=T1)
        store_entries(s, a, [_entry("g3", "k3")], now=T1)
    changed, plain = both()
    assert changed == plain and len(changed) == 4
    assert [x.upvotes for x in changed[:3]] == [None, 7, None]
    assert changed[0] is first[0] and changed[1] is not first[1]
    with session_scope(engine) as s:
        s.execute(update(Feed).where(Feed.id == a).values(name="renamed"))
    renamed, plain = both()
    assert renamed == plain and {x.feed_name for x in renamed} == {"renamed"}

    small = ArticleCache(limit=2)  # over its limit it starts again, still right
    with session_scope(engine) as s:
        got = load_candidates(s, since=since, until=until, cache=small)
    assert got == plain
