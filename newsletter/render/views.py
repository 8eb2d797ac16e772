"""What the email templates see: plain view objects built from the domain types.

Templates never see raw feed data: every string is one line of plain text (Jinja
escapes it), every link is an http(s) URL or empty, and highlights are tuples of
:class:`Segment` (text, mark) runs that the template escapes one by one — HTML is never
concatenated from feed text. Pure functions only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import quote, urlsplit

from newsletter.domain import Article, Field, Match, Profile
from newsletter.render.excerpts import (
    Segment,
    segments,
    trim_plan,
    wrap_text,
)
from newsletter.render.labels import (
    counted,
    date_label,
)

MAX_AUTHORS = 3
SUBJECT_KEYWORDS = 3
FIELD_LABEL: dict[Field, str] = {
    "title": "title",
    "abstract": "abstract",
    "author": "authors",
    "category": "category",
}
FIELD_ORDER: tuple[Field, ...] = ("title", "author", "category", "abstract")  # by weight
ENDS_SENTENCE = re.compile(r"[.!?][\"')\]]*$")
_SPACES = re.compile(r"\s+")
_URL_SAFE = "/:?#[]@!$&'()*+,;=-._~%"
# An http(s) URL that safe_url returns as it is: an ASCII host name, and a path, query
# and fragment of characters quote() leaves alone.
_PLAIN_URL = re.compile(
    r"(?i:https?)://[A-Za-z0-9.-]+(?:[/?#][A-Za-z0-9/:?#\[\]@!$&'()*+,;=._~%-]*)?"
)


# -- views: what the templates see -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardView:
    """One entry as a card (HTML) and a numbered section (text)."""

    rank: int
    link: str  # http(s) or ""
    title: tuple[Segment, ...]
    byline: str  # "A, B, C et al." / "5 authors" / ""
    date: str
    votes: str  # upvotes, "" when the feed has none
    comments: str  # "7 comments", "" when unknown or none
    badge: str  # "Trending" for a trending pick, else ""
    paper_link: str  # the paper's page (Hugging Face), http(s) or ""
    abs_link: str  # arXiv abstract, http(s) or ""
    pdf_link: str  # arXiv PDF, http(s) or ""
    text_link: str  # the text part's unlabelled link: "", when it is a labelled one above
    abstract: tuple[Segment, ...]
    more_link: str  # "read more" target when the abstract was trimmed
    matched: str  # "bilevel optimization (title), RLHF (abstract)"
    title_text: str
    meta_text: str
    abstract_text: str  # wrapped for the plain-text part
    # "More/Fewer like this": signed per subscriber and entry (http(s) or "", by the caller)
    more_like_url: str = ""
    fewer_like_url: str = ""


@dataclass(frozen=True, slots=True)
class MoreView:
    """An entry that did not fit the size budget: a title link only."""

    title: str
    link: str


@dataclass(frozen=True, slots=True)
class EmailView:
    """Everything ``digest.*``, ``empty.*`` and ``subject.txt`` may use."""

    subject: str
    preheader: str
    list_name: str
    period_label: str  # "Sun 22 Nov" / "the week of Mon 16 Nov"
    period_phrase: str  # "today" / "this week"
    name: str
    email: str
    keywords: tuple[str, ...]
    count_label: str  # "7 new papers"
    reason: str  # "matched your keywords" / "are trending" / "... or are trending"
    nouns: str  # "papers", "posts": the entries' noun in the plural (newsletter.noun)
    cards: tuple[CardView, ...]
    more: tuple[MoreView, ...]
    more_label: str
    unsubscribe_url: str
    preferences_url: str
    contact: str
    contact_url: str
    profile_file: str  # the profile's file name; the bundled footer no longer shows it
    browser_url: str = ""  # "View in browser": the kept copy, "" when none is kept


# -- text helpers ----------------------------------------------------------------------


_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    """Feed or profile text made safe for any output: one line, no control characters."""
    if not text.isprintable():
        text = _UNPRINTABLE.sub(" ", text)
    return " ".join(text.split())


def safe_url(url: str) -> str:
    """An http(s) URL with a host, percent-encoded to ASCII; "" for anything else.

    ``javascript:``, ``data:``, relative and protocol-relative links never become an
    ``href``. Encoding here also makes the URL byte-stable through lxml's serialiser.
    """
    if _PLAIN_URL.fullmatch(url):  # the usual case: nothing to clean, check or encode
        return url
    return checked_url(url)


def checked_url(url: str) -> str:
    """:func:`safe_url` the whole way, without its shortcut (which the tests hold to it)."""
    url = clean(url)
    if not url or not url.isprintable():
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return ""
    if not parts.netloc.isascii():
        try:
            host = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
        netloc = parts.netloc.replace(parts.hostname, host)
        url = parts._replace(netloc=netloc).geturl()
    return quote(url, safe=_URL_SAFE)


def _clean_segments(segs: Sequence[Segment]) -> tuple[Segment, ...]:
    """Clean each run (offsets were taken on the raw text) and drop empty ones."""
    out: list[Segment] = []
    for seg in segs:
        text = seg.text
        # Printable text has no control or odd-space characters: only "  " could change.
        if not text.isprintable() or "  " in text:
            text = _SPACES.sub(" ", _UNPRINTABLE.sub("", text))
        if not text:
            continue
        if out and out[-1].mark == seg.mark:
            out[-1] = Segment(out[-1].text + text, seg.mark)
        else:
            out.append(Segment(text, seg.mark))
    if out and not out[0].mark:
        out[0] = Segment(out[0].text.lstrip(), False)
    if out and not out[-1].mark:
        out[-1] = Segment(out[-1].text.rstrip(), False)
    return tuple(s for s in out if s.text)


def _lines(text: str) -> str:
    """Raw summary text cleaned as :func:`_clean_segments` cleans it, its line breaks kept."""
    lines = (_SPACES.sub(" ", _UNPRINTABLE.sub("", line)).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def byline(authors: Sequence[str], count: int | None) -> str:
    names = [n for n in (clean(a) for a in authors) if n]
    if names:
        if len(names) > MAX_AUTHORS:
            return ", ".join(names[:MAX_AUTHORS]) + " et al."
        return ", ".join(names)
    if count:
        return counted(count, "author")
    return ""


def matched_line(match: Match) -> str:
    """ "reward (title, abstract), RLHF (abstract)": strongest field first, then profile order."""
    by_kw: dict[str, set[Field]] = {}
    for keyword, field in match.matched:
        by_kw.setdefault(clean(keyword), set()).add(field)
    order = sorted(by_kw, key=lambda kw: min(FIELD_ORDER.index(f) for f in by_kw[kw]))
    return with_popularity(
        match,
        ", ".join(
            f"{kw} ({', '.join(FIELD_LABEL[f] for f in FIELD_ORDER if f in by_kw[kw])})"
            for kw in order
        ),
    )


def with_popularity(match: Match, keywords: str) -> str:
    """The "why" line with the upvotes when they counted: a trending pick's only reason,
    or a blended score's second one ("RLHF (title) · 57 upvotes")."""
    votes = match.article.upvotes
    if match.trending:
        return f"trending, {counted(votes or 0, 'upvote')}"
    if match.popularity and votes:
        return f"{keywords} · {counted(votes, 'upvote')}"
    return keywords


# -- cards -------------------------------------------------------------------------------


def _spans(match: Match, field: Field) -> list[tuple[int, int]]:
    return [span for h in match.hits if h.field == field for span in h.spans]


@lru_cache(maxsize=8192)
def article_static(article: Article) -> tuple[str, str, str, str, str, str]:
    """Per-article parts that no subscriber changes: link, byline, date, votes, comments,
    meta."""
    link = safe_url(article.link)
    by = byline(article.authors, article.author_count)
    when = date_label(article.published)
    votes = str(article.upvotes) if article.upvotes else ""  # no "▲ 0": unknown or none yet
    comments = counted(article.comments, "comment") if article.comments else ""
    meta = " · ".join(p for p in (by, when, f"▲ {votes}" if votes else "", comments) if p)
    return link, by, when, votes, comments, meta


TRENDING_BADGE = "Trending"


@lru_cache(maxsize=8192)
def article_links(article: Article) -> tuple[str, str, str, str]:
    """The paper page, arXiv abstract and PDF links of a card ("" when unknown or unsafe),
    and the text part's unlabelled link: the card's link unless it is one of them."""
    paper, abs_link, pdf = (
        safe_url(u) for u in (article.paper_url, article.abs_url, article.pdf_url)
    )
    link = safe_url(article.link)
    return paper, abs_link, pdf, "" if link in (paper, abs_link, pdf) else link


def card_view(
    match: Match, rank: int, more_like_url: str = "", fewer_like_url: str = ""
) -> CardView:
    """The card of one match; cached, since many subscribers share an article's hits
    (the feedback links are the subscriber's own, so they are set on the copy)."""
    card = _card(
        match.article,
        tuple(_spans(match, "title")),
        tuple(_spans(match, "abstract")),
        matched_line(match),
        TRENDING_BADGE if match.trending else "",
    )
    if more_like_url or fewer_like_url:
        return replace(card, rank=rank, more_like_url=more_like_url, fewer_like_url=fewer_like_url)
    return card if card.rank == rank else replace(card, rank=rank)


@lru_cache(maxsize=16384)
def _card(
    a: Article,
    title_spans: tuple[tuple[int, int], ...],
    abstract_spans: tuple[tuple[int, int], ...],
    matched: str,
    badge: str,
) -> CardView:
    link, by, when, votes, comments, meta = article_static(a)
    paper, abs_link, pdf, text_link = article_links(a)
    title = _clean_segments(segments(a.title, title_spans)) or (Segment("(untitled)"),)
    ranges, trimmed = trim_plan(a.summary, abstract_spans)
    segs: list[Segment] = []
    plain: list[str] = []
    blocks = "\n" in a.summary  # headings, paragraphs, list items: lines in the text part
    for i, (lo, hi) in enumerate(ranges):
        raw = segments(a.summary, abstract_spans, lo, hi)
        part = _clean_segments(raw)
        if not part:
            continue
        if i:
            segs.append(Segment(" … "))
            plain.append(" … ")
        segs.extend(part)
        shown = "".join(s.text for s in (raw if blocks else part))
        plain.append(_lines(shown) if blocks else shown)
    cut_short = ranges[-1][1] < len(a.summary.rstrip())
    ends_sentence = ENDS_SENTENCE.search(plain[-1] if plain else "") is not None
    if trimmed and segs and cut_short and not (ends_sentence and len(ranges) == 1):
        segs.append(Segment(" …"))
        plain.append(" …")
    abstract_text = wrap_text("".join(plain))
    return CardView(
        rank=0,
        link=link,
        title=title,
        byline=by,
        date=when,
        votes=votes,
        comments=comments,
        badge=badge,
        paper_link=paper,
        abs_link=abs_link,
        pdf_link=pdf,
        text_link=text_link,
        abstract=_clean_segments(segs),
        more_link=link if trimmed else "",
        matched=matched,
        title_text=clean("".join(s.text for s in title)),
        meta_text=meta,
        abstract_text=abstract_text,
    )


def more_view(match: Match) -> MoreView:
    a = match.article
    return MoreView(title=clean(a.title) or "(untitled)", link=safe_url(a.link))


def top_keywords(
    profile: Profile, matches: Sequence[Match], n: int = SUBJECT_KEYWORDS
) -> list[str]:
    """The keywords that matched the most entries (ties: the profile's order)."""
    return rank_keywords(profile, [{clean(h.keyword) for h in m.hits} for m in matches], n)


def rank_keywords(
    profile: Profile, hit_keywords: Iterable[Iterable[str]], n: int = SUBJECT_KEYWORDS
) -> list[str]:
    """:func:`top_keywords` from each match's distinct (cleaned) keywords."""
    order = {clean_keyword(k.term): i for i, k in enumerate(profile.keywords)}
    counts: dict[str, int] = {}
    for keywords in hit_keywords:
        for kw in keywords:
            counts[kw] = counts.get(kw, 0) + 1
    ranked = sorted(counts, key=lambda k: (-counts[k], order.get(k, len(order)), k))
    return ranked[:n]


_KEYWORDS: dict[str, str] = {}
_KEYWORDS_MAX = 20_000


def clean_keyword(term: str) -> str:
    """:func:`clean` of a keyword, memoised (a few thousand terms recur in every email)."""
    got = _KEYWORDS.get(term)
    if got is None:
        if len(_KEYWORDS) >= _KEYWORDS_MAX:
            _KEYWORDS.clear()
        got = _KEYWORDS[term] = clean(term)
    return got
