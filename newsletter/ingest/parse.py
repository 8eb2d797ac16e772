"""RSS and Atom: fetch, parse and normalise a feed, bytes in, :class:`ParsedEntry` values out.

feedparser reads every dialect (RSS 0.9x/1.0/2.0, Atom, RDF) and sanitises HTML; this
module turns its loose dictionaries into plain text, UTC times and a stable dedupe key,
so the database and the matcher never see markup or feed-specific shapes.
"""

from __future__ import annotations

import calendar
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import feedparser

from newsletter import clock
from newsletter.config import FetchSettings
from newsletter.domain import ParsedEntry
from newsletter.errors import FeedError
from newsletter.ingest.http import Download, download
from newsletter.ingest.keys import MAX_GUID, dedupe_key, digest, fit, normalise_title
from newsletter.ingest.text import (
    clean_text,
    first_sentence,
    html_to_text,
    shorten,
    split_author_list,
)

log = logging.getLogger(__name__)

HF_NS = "https://huggingface.co/papers#"
ARXIV_NS = "http://arxiv.org/schemas/atom"
# Extension elements kept in ``extra``: namespace -> local names. feedparser names them
# ``<prefix>_<local>`` after whatever prefix the document declared, so the prefix is
# looked up per feed rather than assumed.
EXTENSIONS: Mapping[str, tuple[str, ...]] = {
    HF_NS: ("upvotes", "authors"),
    ARXIV_NS: ("announce_type",),
}
EXTRA_PREFIX = {HF_NS: "hf", ARXIV_NS: "arxiv"}

TITLE_FALLBACK_CHARS = 120
# A title longer than this over a summary shorter than TINY_SUMMARY_CHARS is a feed that
# put the abstract in <title> (Daily Papers does, with "• 11 authors" as the summary).
LONG_TITLE_CHARS = 300
TINY_SUMMARY_CHARS = 80
TITLE_FROM_TEXT_CHARS = 200

# arXiv's own RSS prefixes every description with this line.
_ARXIV_PREFIX_RE = re.compile(
    r"^\s*arXiv:\S+\s+Announce Type:\s*(?P<type>[\w-]+)\s+Abstract:\s*", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed document: its entries and feedparser's verdict on well-formedness."""

    entries: tuple[ParsedEntry, ...]
    version: str = ""  # feedparser's name for the dialect, e.g. "atom10", "rss20"
    bozo: bool = False
    bozo_message: str | None = None
    skipped: int = 0  # entries with nothing to show (see :func:`normalise_entry`)


@dataclass(frozen=True, slots=True)
class FeedFetch:
    """One feed fetched and parsed: what the pipeline stores and records."""

    download: Download
    parsed: ParsedFeed | None = None  # None for 304 and 410
    warning: str | None = None  # a malformed feed that still yielded entries
    status: Literal["ok", "warning", "not-modified", "gone"] = "ok"

    @property
    def entries(self) -> tuple[ParsedEntry, ...]:
        return self.parsed.entries if self.parsed else ()


def fetch_feed(
    url: str,
    settings: FetchSettings,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    now: datetime | None = None,
) -> FeedFetch:
    """Download and parse one feed; raise :class:`FeedError` when it yields nothing usable."""
    now = now or clock.now()
    got = download(url, settings, etag=etag, last_modified=last_modified)
    if got.status != "ok":
        return FeedFetch(download=got, status=got.status)
    remote = got.http_status is not None
    parsed = parse_feed(
        got.body, headers=got.headers if remote else None, base_url=got.final_url, now=now
    )
    if not parsed.entries and (parsed.bozo or not parsed.version):
        raise FeedError(
            f"not a feed: {parsed.bozo_message or 'no feed format recognised'}", url=url
        )
    if parsed.bozo:
        warning = f"malformed feed, {len(parsed.entries)} entries read: {parsed.bozo_message}"
        log.warning("%s: %s", url, warning)
        return FeedFetch(download=got, parsed=parsed, warning=warning, status="warning")
    return FeedFetch(download=got, parsed=parsed)


def parse_feed(
    data: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    base_url: str = "",
    now: datetime | None = None,
) -> ParsedFeed:
    """Parse a document with feedparser and normalise its entries.

    Never raises for bad input: feedparser reports problems as ``bozo``, and an entry
    that cannot be normalised is skipped and logged.
    """
    now = now or clock.now()
    # HTTP headers only for HTTP: given any, feedparser insists on a Content-Type, which a
    # local file does not have. content-location is the base for relative links.
    response_headers = None
    if headers is not None:
        response_headers = dict(headers)
        if base_url:
            response_headers.setdefault("content-location", base_url)
    # A BytesIO, never the bytes themselves: feedparser treats a string that looks like
    # a URL or a path as something to open.
    d = feedparser.parse(io.BytesIO(data), response_headers=response_headers)
    prefixes = _extension_prefixes(d.get("namespaces"))
    entries: list[ParsedEntry] = []
    skipped = 0
    for raw in d.get("entries") or ():
        try:
            entry = normalise_entry(raw, now=now, prefixes=prefixes)
        except Exception as e:  # one odd entry must not lose the others
            log.warning("%s: skipping an entry that could not be read: %r", base_url, e)
            entry = None
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    bozo_exc = d.get("bozo_exception")
    # A feed served as text/plain or text/html parses fine; the operator cannot fix
    # someone else's server, so that alone is not worth a warning.
    bozo = bool(d.get("bozo")) and not isinstance(bozo_exc, feedparser.NonXMLContentType)
    if skipped:
        log.debug("%s: %d entries with nothing to show skipped", base_url, skipped)
    return ParsedFeed(
        entries=tuple(entries),
        version=str(d.get("version") or ""),
        bozo=bozo,
        bozo_message=_describe(bozo_exc) if bozo else None,
        skipped=skipped,
    )


def _describe(exc: object) -> str:
    text = clean_text(str(exc)) or type(exc).__name__
    return text[:300]


def _extension_prefixes(namespaces: object) -> dict[str, str]:
    """feedparser key prefix -> our prefix, for the extension namespaces we keep."""
    out: dict[str, str] = {}
    if isinstance(namespaces, Mapping):
        for prefix, uri in namespaces.items():
            if isinstance(prefix, str) and prefix and uri in EXTENSIONS:
                out[prefix.lower()] = uri
    for uri, ours in EXTRA_PREFIX.items():
        out.setdefault(ours, uri)
    return out


# -- normalisation -------------------------------------------------------------------


def normalise_entry(
    raw: Mapping[str, Any], *, now: datetime, prefixes: Mapping[str, str] | None = None
) -> ParsedEntry | None:
    """One feedparser entry as plain text; ``None`` when it has nothing to show.

    Nothing to show: no title, summary or link, or a title without a single letter or
    digit (a listing's separator such as "·" scraped as an entry). An abstract put in
    the title over a few words of summary is moved to the summary, and its first
    sentence becomes the title.
    """
    title = _detail_text(raw, "title")
    summary = _summary(raw)
    extra: dict[str, str] = {}
    arxiv_prefix = _ARXIV_PREFIX_RE.match(summary)
    if arxiv_prefix:
        summary = summary[arxiv_prefix.end() :]
        extra["arxiv:announce_type"] = arxiv_prefix.group("type").lower()
    link = _link(raw)
    if not (title or summary or link):
        return None
    if title and not any(c.isalnum() for c in title):
        log.debug("skipping an entry titled %r (no letter or digit): %s", title, link or summary)
        return None
    if not title:
        title = shorten(summary, TITLE_FALLBACK_CHARS) or link
    elif len(title) > LONG_TITLE_CHARS and len(summary) < TINY_SUMMARY_CHARS:
        title, summary = first_sentence(title, TITLE_FROM_TEXT_CHARS), title
    extra.update(_extensions(raw, prefixes or _extension_prefixes(None)))
    raw_id = clean_text(_str(raw.get("id")))
    guid = raw_id or link or "title:" + digest(normalise_title(title) + "\n" + summary)
    return ParsedEntry(
        guid=fit(guid, MAX_GUID),
        dedupe_key=dedupe_key(guid=guid, link=link, title=title),
        title=title,
        summary=summary,
        link=link,
        authors=_authors(raw),
        categories=_categories(raw),
        published=_published(raw, now),
        extra=extra,
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _detail_text(raw: Mapping[str, Any], key: str) -> str:
    """A text construct as plain text, stripping markup only when it is markup."""
    value = _str(raw.get(key))
    detail = raw.get(f"{key}_detail")
    ctype = _str(detail.get("type")) if isinstance(detail, Mapping) else ""
    return _as_text(value, ctype)


def _as_text(value: str, ctype: str, *, blocks: bool = False) -> str:
    if not value:
        return ""
    # Plain text stays as written: "a <T> template" is not a tag.
    if ctype == "text/plain":
        return clean_text(value)
    return html_to_text(value, blocks=blocks)


def _summary(raw: Mapping[str, Any]) -> str:
    """The summary (else the content) as text, its headings, paragraphs and list items
    kept as lines."""
    detail = raw.get("summary_detail")
    ctype = _str(detail.get("type")) if isinstance(detail, Mapping) else ""
    text = _as_text(_str(raw.get("summary")), ctype, blocks=True)
    if text:
        return text
    for content in raw.get("content") or ():
        if isinstance(content, Mapping):
            value, ctype = _str(content.get("value")), _str(content.get("type"))
            text = _as_text(value, ctype, blocks=True)
            if text:
                return text
    return ""


def _link(raw: Mapping[str, Any]) -> str:
    link = _str(raw.get("link")).strip()
    if not link:
        for item in raw.get("links") or ():
            if isinstance(item, Mapping) and item.get("rel", "alternate") == "alternate":
                link = _str(item.get("href")).strip()
                if link:
                    break
    if not link and raw.get("guidislink"):
        link = _str(raw.get("id")).strip()
    link = clean_text(link).replace(" ", "%20")
    return link if urlsplit(link).scheme in ("http", "https") else ""


def _authors(raw: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for item in raw.get("authors") or ():
        if isinstance(item, Mapping):
            names.append(html_to_text(_str(item.get("name")) or _str(item.get("email"))))
    if not names:
        names.append(html_to_text(_str(raw.get("author"))))
    names = [n for n in names if n]
    if len(names) == 1:
        names = split_author_list(names[0])
    return tuple(dict.fromkeys(names))


def _categories(raw: Mapping[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for tag in raw.get("tags") or ():
        if isinstance(tag, Mapping):
            term = html_to_text(_str(tag.get("term")) or _str(tag.get("label")))
            if term:
                out.append(term)
    return tuple(dict.fromkeys(out))


def _published(raw: Mapping[str, Any], now: datetime) -> datetime:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get: FeedParserDict.get("updated_parsed") warns and aliases "published".
        value = dict.get(raw, key) if isinstance(raw, dict) else raw.get(key)
        if isinstance(value, tuple) and len(value) >= 6:
            try:
                return datetime.fromtimestamp(calendar.timegm(tuple(value)[:9]), UTC)
            except (OverflowError, OSError, ValueError, TypeError):
                continue
    return now


def _extensions(raw: Mapping[str, Any], prefixes: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for prefix, uri in prefixes.items():
        for local in EXTENSIONS[uri]:
            value = clean_text(_str(raw.get(f"{prefix}_{local}")))
            if value:
                out[f"{EXTRA_PREFIX[uri]}:{local}"] = value
    return out
