"""Deterministic benchmark workload: entries and subscriber profiles from a seed.

Entries reuse the sample feeds' vocabulary and sentence shapes, so titles and abstracts
have realistic lengths and word statistics. Keywords are drawn Zipf-like from a few
thousand terms and phrases taken from those entries: popular keywords match hundreds of
entries, rare ones a few.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from xml.etree import ElementTree as ET

from newsletter.config import FeedSettings
from newsletter.db import session_scope
from newsletter.db.core import connect
from newsletter.db.entries import store_entries, sync_feeds
from newsletter.db.subscribers import sync_subscribers
from newsletter.domain import Article, Keyword, ParsedEntry, Profile
from newsletter.matching.textnorm import STOP_WORDS

ATOM = "{http://www.w3.org/2005/Atom}"
SAMPLE_FEEDS = Path(__file__).resolve().parent.parent / "examples" / "feeds"
WORD = re.compile(r"[A-Za-z][A-Za-z\-]{2,}")
SENTENCE = re.compile(r"(?<=[.!?])\s+")
STOP = STOP_WORDS | {
    "can",
    "may",
    "not",
    "using",
    "used",
    "use",
    "based",
    "show",
    "shows",
    "new",
    "two",
    "one",
}


@dataclass(frozen=True)
class Corpus:
    titles: list[str]
    sentences: list[str]
    terms: list[str]  # single words and two-word phrases, most frequent first


def load_corpus(feeds_dir: Path = SAMPLE_FEEDS) -> Corpus:
    titles: list[str] = []
    sentences: list[str] = []
    for path in sorted(feeds_dir.glob("*.atom")):
        root = ET.parse(path).getroot()
        for entry in root.iter(f"{ATOM}entry"):
            title = (entry.findtext(f"{ATOM}title") or "").strip()
            summary = (entry.findtext(f"{ATOM}summary") or "").strip()
            if 3 < len(title) < 300:
                titles.append(title)
            sentences.extend(s for s in SENTENCE.split(summary) if len(s) > 30)
    words: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    for text in titles + sentences:
        toks = [t.lower() for t in WORD.findall(text)]
        words.update(t for t in toks if t not in STOP)
        phrases.update(f"{a} {b}" for a, b in pairwise(toks) if a not in STOP and b not in STOP)
    terms = [w for w, _ in words.most_common(2500)]
    terms += [p for p, c in phrases.most_common(1500) if c > 1]
    return Corpus(titles=titles, sentences=sentences, terms=terms)


def make_articles(corpus: Corpus, n: int, seed: int, now: datetime | None = None) -> list[Article]:
    """``n`` entries whose titles and abstracts recombine the sample corpus."""
    rng = random.Random(seed)
    now = now or datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    articles: list[Article] = []
    for i in range(n):
        base = rng.choice(corpus.titles).split()
        for _ in range(rng.randint(0, 3)):
            base[rng.randrange(len(base))] = rng.choice(corpus.terms).title()
        abstract = " ".join(rng.sample(corpus.sentences, rng.randint(4, 9)))
        n_authors = rng.randint(1, 12)
        articles.append(
            Article(
                id=i + 1,
                title=" ".join(base),
                summary=abstract,
                link=f"https://example.org/papers/{seed}-{i}",
                authors=tuple(f"Author {rng.randint(1, 5000)}" for _ in range(min(n_authors, 4))),
                categories=("cs.LG",) if i % 3 else ("cs.CL", "cs.AI"),
                published=now - timedelta(hours=rng.randint(1, 72)),
                first_seen=now - timedelta(minutes=rng.randint(1, 600)),
                upvotes=rng.randint(0, 200),
                author_count=n_authors,
                feed_name="bench",
            )
        )
    return articles


def make_profiles(corpus: Corpus, n: int, seed: int) -> list[Profile]:
    """``n`` profiles of 5-15 keywords each, drawn Zipf-like (rank r has weight 1/r)."""
    rng = random.Random(seed + 1)
    terms = corpus.terms
    weights = [1.0 / (r + 1) for r in range(len(terms))]
    timezones = ["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata"]
    profiles: list[Profile] = []
    for i in range(n):
        picked = dict.fromkeys(rng.choices(terms, weights=weights, k=rng.randint(5, 15)))
        keywords = tuple(Keyword(term=t, weight=2.0 if rng.random() < 0.1 else 1.0) for t in picked)
        exclude = (Keyword(term="survey"),) if rng.random() < 0.2 else ()
        profiles.append(
            Profile(
                email=f"reader{i:06d}@bench.example",
                name=f"Reader {i}",
                keywords=keywords,
                exclude=exclude,
                timezone=rng.choice(timezones),
            )
        )
    return profiles


def _parsed(a: Article) -> ParsedEntry:
    return ParsedEntry(
        guid=a.link,
        dedupe_key=a.link,
        title=a.title,
        summary=a.summary,
        link=a.link,
        authors=a.authors,
        categories=a.categories,
        published=a.published,
        extra={"hf:upvotes": str(a.upvotes)} if a.upvotes is not None else {},
    )


def store_workload(db_url: str, n: int, n_entries: int, seed: int, *, now: datetime) -> None:
    """The workload of ``benchmarks.run`` (same seed, same subscribers and entries) at
    ``now``: workers read the wall clock, so the entries must be new at the real now."""
    corpus = load_corpus()
    articles = make_articles(corpus, n_entries, seed, now=now)
    profiles = make_profiles(corpus, n, seed)
    engine = connect(db_url)
    try:
        with session_scope(engine) as session:
            feed = sync_feeds(session, [FeedSettings("bench", "https://bench.example/feed")])
            store_entries(
                session,
                feed["bench"].id,
                [_parsed(a) for a in articles],
                now=now - timedelta(hours=1),
            )
        with session_scope(engine) as session:
            sync_subscribers(session, profiles, now=now - timedelta(days=2))
    finally:
        engine.dispose()
