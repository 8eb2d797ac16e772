"""Plain, immutable value types that flow between the stages.

They carry no ORM state, so ``matching`` and ``render`` stay pure and can run in a
worker process (or, later, a Celery worker) from data alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Literal

Field = Literal["title", "abstract", "author", "category"]
FIELDS: tuple[Field, ...] = ("title", "abstract", "author", "category")
Frequency = Literal["daily", "weekly"]


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One entry as normalised by ``feeds`` before it is stored."""

    guid: str
    dedupe_key: str
    title: str
    summary: str
    link: str
    authors: tuple[str, ...]
    categories: tuple[str, ...]
    published: datetime  # timezone-aware UTC; fetch time when the feed had none
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. {"hf:upvotes": "12"}


@dataclass(frozen=True, slots=True)
class Article:
    """A stored entry, as matching and rendering see it."""

    id: int
    title: str
    summary: str
    link: str
    authors: tuple[str, ...]
    categories: tuple[str, ...]
    published: datetime
    first_seen: datetime
    upvotes: int | None = None
    comments: int | None = None  # hf:comments, the paper page's comment count, when known
    author_count: int | None = None  # hf:authors when the feed gives a count, not names
    feed_name: str = ""
    paper_url: str = ""  # hf:paper, the paper's discussion page, when the feed gives it
    abs_url: str = ""  # arxiv:abs
    pdf_url: str = ""  # arxiv:pdf


@dataclass(frozen=True, slots=True)
class Keyword:
    """One keyword of a profile, with the per-keyword modifiers of the YAML contract."""

    term: str
    weight: float = 1.0
    exact: bool = False  # no stemming
    field: Field | None = None  # restrict to one field


@dataclass(frozen=True, slots=True)
class Profile:
    """A validated subscriber profile (from YAML, or loaded back from the database)."""

    email: str  # normalised: stripped and lower-cased (profiles.normalise_email)
    keywords: tuple[Keyword, ...]
    name: str | None = None
    exclude: tuple[Keyword, ...] = ()
    max_items: int | None = None  # None: config default
    trending: int | None = None  # the N most upvoted new papers, matched or not
    frequency: Frequency = "daily"
    weekday: int = 0  # 0 = Monday; used when frequency is weekly
    send_time: time | None = None  # None: config default
    timezone: str | None = None  # IANA name; None: config default
    active: bool = True
    source: str | None = None  # file the profile came from
    line: int | None = None  # line in that file where the profile starts


@dataclass(frozen=True, slots=True)
class Hit:
    """Where one keyword matched one field: what the email explains and highlights."""

    keyword: str  # the keyword's term as the subscriber wrote it
    field: Field
    spans: tuple[tuple[int, int], ...]  # [start, end) character offsets into that field's text
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Match:
    """One article chosen for one subscriber, with its score and explanation."""

    article: Article
    score: float  # keyword score + popularity
    hits: tuple[Hit, ...]
    popularity: float = 0.0  # the upvote term of ``score`` (matching.popularity)
    trending: bool = False  # a trending pick: chosen for its upvotes, maybe no keyword

    @property
    def keyword_score(self) -> float:
        """The keyword part of ``score``, for explanations (``match --json``)."""
        return self.score - self.popularity if self.popularity else self.score

    @property
    def matched(self) -> tuple[tuple[str, Field], ...]:
        """(keyword, field) pairs, in order, without repeats: the "why" line."""
        seen: dict[tuple[str, Field], None] = {}
        for h in self.hits:
            seen.setdefault((h.keyword, h.field), None)
        return tuple(seen)
