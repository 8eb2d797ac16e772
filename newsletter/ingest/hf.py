"""Hugging Face Daily Papers: the JSON API's listing days, bytes in, ``ParsedEntry`` out.

The API answers ``URL?date=YYYY-MM-DD`` with a JSON array of items, each with a ``paper``
object. Today and the previous ``days`` listing days are read on every fetch so late
upvotes and missed days are caught; each day is its own URL with its own validators
(ETag, Last-Modified), so a day that has not changed costs a 304 and nothing else.
Every paper is keyed ``arxiv:<id>``, the key an arXiv or Atom copy of the same paper
gets, so the two are one entry. One bad day is an
error for that day, one bad item is skipped; neither stops the other days or items.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from newsletter.config import FetchSettings
from newsletter.domain import ParsedEntry
from newsletter.errors import FeedError
from newsletter.ingest.http import Download, download
from newsletter.ingest.keys import arxiv_id
from newsletter.ingest.text import clean_text, html_to_text

log = logging.getLogger(__name__)

PAPER_PAGE = "https://huggingface.co/papers/{id}"
ARXIV_ABS = "https://arxiv.org/abs/{id}"
ARXIV_PDF = "https://arxiv.org/pdf/{id}"
MAX_AUTHORS = 50  # names kept per paper; the full count goes in ``hf:authors``
MAX_AUTHOR_CHARS = 200
MAX_TITLE_CHARS = 1000
MAX_SUMMARY_CHARS = 20000


Validators = tuple[str | None, str | None]  # (ETag, Last-Modified) of one day's URL


@dataclass(frozen=True, slots=True)
class DayFetch:
    """One listing day: its entries, or the error that lost it, or a 304 (no change)."""

    day: date
    entries: tuple[ParsedEntry, ...] = ()
    skipped: tuple[str, ...] = ()  # why each dropped item was dropped
    error: str | None = None
    http_status: int | None = None
    url: str = ""  # the day's URL (``URL?date=YYYY-MM-DD``), what its validators belong to
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False  # a 304: the day is as it was when its validators were read


@dataclass(frozen=True, slots=True)
class DailyPapersFetch:
    """Every listing day asked for, in order (oldest first)."""

    days: tuple[DayFetch, ...]
    download: Download = field(default_factory=lambda: Download(status="ok"))

    @property
    def entries(self) -> tuple[ParsedEntry, ...]:
        """One entry per paper: the first day that listed it, the highest count read now.

        A paper listed on two of the days read comes back on both pages; the counts were
        read moments apart, so the higher is the fresher.
        """
        out: dict[str, ParsedEntry] = {}
        for d in self.days:
            for e in d.entries:
                seen = out.get(e.guid)
                if seen is None:
                    out[e.guid] = e
                elif _votes(e) > _votes(seen):
                    extra = {**e.extra, "hf:listed": seen.extra["hf:listed"]}
                    out[e.guid] = dataclasses.replace(e, extra=extra)
        return tuple(out.values())

    @property
    def failed(self) -> tuple[DayFetch, ...]:
        return tuple(d for d in self.days if d.error is not None)

    @property
    def not_modified(self) -> bool:
        """Every day asked for answered 304: nothing to store."""
        return all(d.not_modified for d in self.days)

    @property
    def validators(self) -> dict[str, Validators]:
        """Each remote day's validators for the next conditional GET: those of the page
        stored now, or (a failed day) still those of the page stored before."""
        return {d.url: (d.etag, d.last_modified) for d in self.days if d.url}

    @property
    def warning(self) -> str | None:
        """Lost days and dropped items, in one line for the feed's status."""
        parts = [f"{d.day.isoformat()}: {d.error}" for d in self.failed]
        skipped = sum(len(d.skipped) for d in self.days)
        if skipped:
            first = next(s for d in self.days for s in d.skipped)
            parts.append(f"{skipped} item(s) skipped (first: {first})")
        return "; ".join(parts) or None


def _votes(e: ParsedEntry) -> int:
    return int(e.extra.get("hf:upvotes", "-1"))


def listing_days(today: date, days: int) -> tuple[date, ...]:
    """Today and the ``days`` listing days before it, oldest first."""
    return tuple(today - timedelta(days=n) for n in range(days, -1, -1))


def day_url(url: str, day: date) -> str:
    """``url`` with ``date=YYYY-MM-DD`` set (any other query parameters kept)."""
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and not p.startswith("date=")]
    query = "&".join([*kept, urlencode({"date": day.isoformat()})])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def fetch_daily_papers(
    url: str,
    settings: FetchSettings,
    *,
    days: int,
    now: datetime,
    validators: Mapping[str, Validators] | None = None,
) -> DailyPapersFetch:
    """Read each listing day through the feeds' HTTP layer; a local path is read once.

    ``validators`` are the ETag and Last-Modified kept per day URL from earlier reads
    (:attr:`DailyPapersFetch.validators`): a day they match answers 304 and keeps what
    was stored. Raises :class:`FeedError` only when every day failed.
    """
    today = now.astimezone(UTC).date()
    remote = url.startswith(("http://", "https://"))
    wanted = listing_days(today, days) if remote else (today,)
    known = validators or {}
    out: list[DayFetch] = []
    last: Download | None = None
    for day in wanted:
        target = day_url(url, day) if remote else url
        etag, modified = known.get(target, (None, None)) if remote else (None, None)
        where = target if remote else ""
        # A failed day keeps the validators it was sent: they describe what is stored.
        kept = DayFetch(day, url=where, etag=etag, last_modified=modified)
        try:
            got = download(target, settings, etag=etag, last_modified=modified)
        except FeedError as e:
            out.append(dataclasses.replace(kept, error=_bare(e, url), http_status=e.status))
            continue
        last = got
        code = got.http_status
        if got.status == "not-modified" and (etag or modified):
            out.append(
                DayFetch(
                    day,
                    http_status=code,
                    url=where,
                    etag=got.etag,
                    last_modified=got.last_modified,
                    not_modified=True,
                )
            )
            continue
        if got.status != "ok":  # 410 for a day, or a 304 we did not ask for
            out.append(dataclasses.replace(kept, error=f"HTTP {code}", http_status=code))
            continue
        try:
            entries, skipped = parse_daily_papers(got.body, listed=day, now=now, url=url)
        except FeedError as e:
            out.append(dataclasses.replace(kept, error=_bare(e, url), http_status=code))
            continue
        out.append(
            DayFetch(
                day,
                entries=entries,
                skipped=skipped,
                http_status=code,
                url=where,
                etag=got.etag,
                last_modified=got.last_modified,
            )
        )
    result = DailyPapersFetch(days=tuple(out), download=last or Download(status="ok"))
    if len(result.failed) == len(out):
        first = out[0]
        raise FeedError(
            f"every listing day failed ({first.day.isoformat()}: {first.error})",
            url=url,
            status=first.http_status,
        )
    return result


def parse_daily_papers(
    body: bytes, *, listed: date, now: datetime, url: str = ""
) -> tuple[tuple[ParsedEntry, ...], tuple[str, ...]]:
    """One day's JSON array as entries; raise :class:`FeedError` if it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise FeedError(f"malformed JSON: {e}", url=url) from e
    if isinstance(doc, Mapping) and isinstance(doc.get("papers"), list):
        doc = doc["papers"]
    if not isinstance(doc, list):
        raise FeedError(f"expected a JSON array of papers, got {type(doc).__name__}", url=url)
    entries: list[ParsedEntry] = []
    skipped: list[str] = []
    for n, item in enumerate(doc, start=1):
        try:
            entries.append(_entry(item, listed=listed, now=now))
        except _Skip as e:
            skipped.append(f"item {n}: {e}")
    if skipped:
        log.info("daily papers %s: %d item(s) skipped", listed, len(skipped))
    return tuple(entries), tuple(skipped)


class _Skip(Exception):
    """An item that cannot be an entry; the reason goes in the feed's status."""


def _entry(item: Any, *, listed: date, now: datetime) -> ParsedEntry:
    if not isinstance(item, Mapping):
        raise _Skip("not an object")
    paper = item.get("paper")
    if not isinstance(paper, Mapping):
        raise _Skip("no paper object")
    raw_id = paper.get("id")
    found = arxiv_id(f"arxiv:{raw_id}") if isinstance(raw_id, str) else None
    if not found:
        raise _Skip(f"no arXiv id (got {raw_id!r})")
    title = _text(paper.get("title") or item.get("title"), MAX_TITLE_CHARS)
    if not title:
        raise _Skip(f"{found}: no title")
    summary = html_to_text(_str(paper.get("summary") or item.get("summary")), blocks=True)
    summary = summary[:MAX_SUMMARY_CHARS]
    names, total = _authors(paper.get("authors"))
    extra: dict[str, str] = {
        "hf:listed": listed.isoformat(),
        "hf:paper": PAPER_PAGE.format(id=found),
        "arxiv:abs": ARXIV_ABS.format(id=found),
        "arxiv:pdf": ARXIV_PDF.format(id=found),
    }
    upvotes = _count(paper.get("upvotes"))
    if upvotes is not None:
        extra["hf:upvotes"] = str(upvotes)
    comments = _count(item.get("numComments"))
    if comments is not None:
        extra["hf:comments"] = str(comments)
    if total > len(names):
        extra["hf:authors"] = str(total)
    return ParsedEntry(
        guid=f"hf-paper:{found}",
        dedupe_key=f"arxiv:{found}",
        title=title,
        summary=summary,
        link=PAPER_PAGE.format(id=found),
        authors=names,
        categories=(),
        published=_time(paper.get("publishedAt") or item.get("publishedAt"), now),
        extra=extra,
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _text(value: object, limit: int) -> str:
    return clean_text(_str(value))[:limit]


def _count(value: object) -> int | None:
    """A non-negative whole number, or None for anything else (``"12"``, ``null``, ``-1``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _authors(value: object) -> tuple[tuple[str, ...], int]:
    """Up to :data:`MAX_AUTHORS` visible names, and how many authors there were."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return (), 0
    names: list[str] = []
    total = 0
    for a in value:
        name = a.get("name") if isinstance(a, Mapping) else a
        if isinstance(a, Mapping) and a.get("hidden") is True:
            continue
        text = _text(name, MAX_AUTHOR_CHARS)
        if not text:
            continue
        total += 1
        if len(names) < MAX_AUTHORS:
            names.append(text)
    return tuple(names), total


def _time(value: object, now: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return now
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return now


def _bare(e: FeedError, url: str) -> str:
    """The error without its URL prefix: the feed's status names the URL already."""
    text = str(e)
    prefix = f"{e.url}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
