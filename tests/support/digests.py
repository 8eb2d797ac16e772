"""Hand-built domain objects for rendering tests, and an HTML comparer of our own.

Matches are built the way the matcher builds them (spans into ``title`` / ``summary``)
but without it, so render tests do not depend on matching rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from newsletter.config import NewsletterSettings, Settings, load_settings
from newsletter.db import connect, session_scope
from newsletter.db.entries import to_article
from newsletter.domain import Article, Field, Hit, Keyword, Match, ParsedEntry, Profile
from newsletter.models import Entry
from newsletter.pipeline.fetch import fetch_feeds
from newsletter.pipeline.sync import sync_directory
from newsletter.render import DigestRequest, Renderer

DAY = date(2026, 11, 22)  # a Sunday
PERIOD = DAY.isoformat()
UNSUB = "https://news.example.org/unsubscribe/tok123"
_ids = count(1)

ABSTRACT = (
    "Designing reward functions for efficiently guiding reinforcement learning agents toward "
    "specific behaviors is a complex task. This is challenging since it requires reward "
    "structures that are not sparse and that avoid inducing undesirable behaviors. Naively "
    "modifying the reward structure to offer denser feedback can lead to unintended outcomes. "
    "Although potential-based reward shaping is often suggested as a remedy, we systematically "
    "investigate settings where deploying it often significantly impairs performance. To "
    "address these issues, we introduce a framework that uses bilevel optimization to learn "
    "behavior alignment reward functions. Our results show that RLHF pipelines benefit. "
    "We evaluate on many tasks and release code."
)


def article(
    title: str = "Bilevel Optimization for RLHF",
    summary: str = ABSTRACT,
    *,
    id: int | None = None,
    link: str = "",
    authors: Sequence[str] = (),
    upvotes: int | None = None,
    author_count: int | None = None,
) -> Article:
    ident = next(_ids) if id is None else id
    return Article(
        id=ident,
        title=title,
        summary=summary,
        link=link or f"https://huggingface.co/papers?q=paper{ident}",
        authors=tuple(authors),
        categories=(),
        published=datetime(2026, 11, 20, 12, tzinfo=UTC),
        first_seen=datetime(2026, 11, 21, 6, tzinfo=UTC),
        upvotes=upvotes,
        author_count=author_count,
    )


def stored_articles(
    entries: Iterable[ParsedEntry],
    *,
    first_id: int,
    feed_name: str,
    now: datetime,
    upvotes: bool = True,
) -> list[Article]:
    """Parsed entries as the product hands them on once stored: ``Entry`` -> ``Article``.

    ``upvotes=False`` drops the ``hf:upvotes`` count (tests that do not look at it).
    """
    out = []
    for i, p in enumerate(entries, start=first_id):
        votes = p.extra.get("hf:upvotes") if upvotes else None
        entry = Entry(
            id=i,
            title=p.title,
            summary=p.summary,
            link=p.link,
            authors=list(p.authors),
            categories=list(p.categories),
            extra=dict(p.extra),
            upvotes=int(votes) if votes else None,
            published_at=p.published,
            first_seen_at=now,
        )
        out.append(to_article(entry, feed_name=feed_name))
    return out


def spans_of(text: str, word: str) -> tuple[tuple[int, int], ...]:
    """Every case-insensitive occurrence of ``word`` (what a matcher would report)."""
    return tuple((m.start(), m.end()) for m in re.finditer(re.escape(word), text, re.IGNORECASE))


def match(a: Article, *keywords: str, score: float = 1.0) -> Match:
    """A match of ``a`` on each keyword, with hits wherever the keyword occurs."""
    hits: list[Hit] = []
    for kw in keywords:
        for field, text in (("title", a.title), ("abstract", a.summary)):
            spans = spans_of(text, kw)
            if spans:
                f: Field = "title" if field == "title" else "abstract"
                hits.append(Hit(kw, f, spans))
    return Match(a, score, tuple(hits))


def profile(
    email: str = "ada@example.org",
    name: str | None = "Ada Lovelace",
    keywords: Sequence[str] = ("bilevel optimization", "RLHF", "reward"),
    **kw: Any,
) -> Profile:
    return Profile(
        email=email,
        name=name,
        keywords=tuple(Keyword(k) for k in keywords),
        source=f"/srv/subscribers/{email.split('@')[0]}.yaml",
        **kw,
    )


def request(p: Profile, matches: Sequence[Match], *, day: date = DAY, **kw: Any) -> DigestRequest:
    return DigestRequest(
        profile=p,
        matches=tuple(matches),
        day=day,
        period=day.isoformat(),
        unsubscribe_url=kw.pop("unsubscribe_url", UNSUB),
        **kw,
    )


def sample_matches(n: int = 3) -> list[Match]:
    """A varied digest: long and short abstracts, names or a count, votes or none."""
    shapes = [
        article(
            "Behavior Alignment via Reward Function Optimization",
            upvotes=12,
            author_count=5,
        ),
        article(
            "Bilevel optimization for RLHF <b>bold</b> & 'quotes'",
            authors=("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"),
        ),
        article("Short one", "Tiny abstract about RLHF.", upvotes=0),
        article("No link at all", "About reward.", link="javascript:alert(1)"),
        article("Preference optimization without RLHF", ABSTRACT[:300], authors=("Solo Author",)),
    ]
    out = []
    for i in range(n):
        a = shapes[i % len(shapes)]
        if i >= len(shapes):
            a = replace(a, id=next(_ids), title=f"{a.title} #{i}")
        out.append(match(a, "bilevel optimization", "RLHF", "reward", score=10.0 - i))
    return out


def settings(**kw: Any) -> NewsletterSettings:
    base: dict[str, Any] = {
        "from_addr": "Research Digest <digest@example.org>",
        "list_name": "Research Digest",
        "list_id": "digest.example.org",
    }
    base.update(kw)
    return NewsletterSettings(**base)


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(settings())


# -- an independent HTML comparer (html.parser, not lxml) ----------------------------------


class _Canon(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[tuple[Any, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        norm = []
        for k, v in sorted(attrs):
            v = v or ""
            if k == "style":
                v = ";".join(sorted(" ".join(d.split()) for d in v.split(";") if d.strip()))
            norm.append((k, " ".join(v.split())))
        self.items.append(("start", tag, tuple(norm)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        self.items.append(("end", tag))

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text:
            self.items.append(("text", text))

    def handle_comment(self, data: str) -> None:
        self.items.append(("comment", " ".join(data.split())))


def canonical_html(html: str) -> list[tuple[Any, ...]]:
    """Elements, sorted attributes and declarations, whitespace-squashed text."""
    p = _Canon()
    p.feed(html)
    p.close()
    return p.items


# -- a database to preview from ------------------------------------------------------------

FEED = Path(__file__).resolve().parent.parent / "fixtures" / "golden_feed.atom"
FETCHED = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)

PROFILES = {
    "ada.yaml": """\
email: ada@example.org
name: Ada Lovelace
keywords:
  - bilevel optimization
  - term: RLHF
    weight: 2
  - reward
timezone: Europe/Berlin
""",
    "bob.yaml": """\
email: bob@example.org
keywords: [quantum gravity]
""",
    "team.yaml": """\
- email: chloe@example.org
  name: Chloé O'Neil
  keywords: [preference, alignment]
  exclude: [survey]
  max_items: 2
- email: dan@example.org
  keywords: [Schrodinger bridge]
  frequency: weekly
  weekday: sunday
  timezone: America/Los_Angeles
""",
}


def preview_config(tmp_path: Path, db_url: str) -> Path:
    """A config: the golden feed, the profiles above, an outbox in ``tmp_path``."""
    (tmp_path / "subscribers").mkdir(exist_ok=True)
    for name, text in PROFILES.items():
        (tmp_path / "subscribers" / name).write_text(text, encoding="utf-8")
    path = tmp_path / "newsletter.toml"
    path.write_text(
        f"""\
[database]
url = "{db_url}"

[newsletter]
subscribers_dir = "subscribers"
outbox_dir = "outbox"
from = "Research Digest <digest@example.org>"
base_url = "https://news.example.org"
list_id = "digest.example.org"
[[feeds]]
name = "golden"
url = "{FEED}"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def preview_world(tmp_path: Path, db_url: str) -> Iterator[tuple[Settings, Engine]]:
    """A database with the golden feed fetched and the sample profiles synced."""
    settings = load_settings(preview_config(tmp_path, db_url), env={})
    engine = connect(settings.database.url)
    try:
        fetch_feeds(engine, settings, now=FETCHED)
        with session_scope(engine) as session:
            loaded, _ = sync_directory(session, settings.newsletter.subscribers_dir, now=FETCHED)
        assert loaded.ok, loaded.problems
        yield settings, engine
    finally:
        engine.dispose()
