"""Every hostile entry of feedparser's sanitize corpus, ingested and rendered, is harmless."""

from __future__ import annotations

import email
import email.policy
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from newsletter.domain import Article, Hit, Match
from newsletter.ingest import parse_feed
from newsletter.render import Renderer
from tests.support.digests import profile, request, settings, stored_articles

SANITIZE = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/fixtures/feedparser-tests/wellformed/sanitize"
)
NOW = datetime(2026, 11, 22, 6, tzinfo=UTC)
SCRIPT = re.compile(r"<\s*script", re.IGNORECASE)
EVENT_ATTR = re.compile(r"<[^>]*\son\w+\s*=", re.IGNORECASE)
JS_URL = re.compile(r"javascript\s*:", re.IGNORECASE)


def ingested(path: Path, start_id: int) -> list[Article]:
    """The product's path: feedparser + the ingest normaliser, stored as an Entry."""
    parsed = parse_feed(path.read_bytes(), base_url=f"http://127.0.0.1/{path.name}", now=NOW)
    return stored_articles(
        parsed.entries, first_id=start_id, feed_name=path.stem, now=NOW, upvotes=False
    )


def raw(path: Path, start_id: int) -> list[Article]:
    """feedparser's strings untouched (sanitised by feedparser, but still HTML).

    Render must be safe on its own, whatever ingest does. Feed-level fields, where half
    the corpus hides its markup, go the same way.
    """
    d = feedparser.parse(io.BytesIO(path.read_bytes()))
    out = []
    for i, item in enumerate([*(d.get("entries") or ()), d.get("feed") or {}]):
        content = " ".join(str(c.get("value", "")) for c in item.get("content") or ())
        texts = [str(item.get(k) or "") for k in ("title", "summary", "subtitle", "info", "rights")]
        texts = [t for t in [*texts, content] if t]
        if texts:
            out.append(
                Article(
                    id=start_id + i,
                    title=texts[0],
                    summary=" ".join(texts),
                    link=str(item.get("link") or ""),
                    authors=tuple(str(a.get("name", "")) for a in item.get("authors") or ()),
                    categories=(),
                    published=NOW,
                    first_seen=NOW,
                )
            )
    return out


def _matched(a: Article) -> Match:
    """Highlight the first word of title and abstract, so the <mark> path runs too."""
    hits = []
    for field, text in (("title", a.title), ("abstract", a.summary)):
        m = re.search(r"\w+", text)
        if m:
            hits.append(Hit("x", field, ((m.start(), m.end()),)))  # type: ignore[arg-type]
    return Match(a, 1.0, tuple(hits))


def _check_html(html: str, data: bytes, name: str) -> None:
    assert not SCRIPT.search(html), f"{name}: <script in the HTML"
    assert not JS_URL.search(html), f"{name}: javascript: in the HTML"
    assert not EVENT_ATTR.search(html), f"{name}: an on*= attribute"
    decoded = email.message_from_bytes(data, policy=email.policy.default)
    body = decoded.get_body(("html",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == html


@pytest.mark.slow
@pytest.mark.skipif(not SANITIZE.is_dir(), reason=f"{SANITIZE} is missing")
def test_sanitize_corpus_renders_safely() -> None:
    files = sorted(SANITIZE.glob("*.xml"))
    assert len(files) > 700
    r = Renderer(settings())
    rendered = entries = 0
    for n, path in enumerate(files):
        product = ingested(path, start_id=n * 100 + 1)
        if product:
            out = r.render(request(profile(), [_matched(a) for a in product]))
            assert out is not None
            _check_html(out.html, out.data, path.name)
            # Ingest made plain text of it: nothing hostile is left in the text part either.
            assert not SCRIPT.search(out.text), f"{path.name}: <script in the text part"
            assert not JS_URL.search(out.text), f"{path.name}: javascript: in the text part"
            entries += len(product)
        unprocessed = raw(path, start_id=n * 100 + 50)
        if unprocessed:
            out = r.render(request(profile(), [_matched(a) for a in unprocessed]))
            assert out is not None
            _check_html(out.html, out.data, path.name)
        rendered += bool(product or unprocessed)
    assert entries > 150
    assert rendered == len(files)  # every file gave something to render
    assert r.fast, r.fallback_reason
