"""What every card of one article shares, built once for all subscribers. Pure.

Split from :mod:`newsletter.render.cards`: the entry (link, byline, where the abstract
is cut, its wrapped plain text, the fill's static groups) and the variant of a card's
view computed from it by field name.
"""

from __future__ import annotations

import re

from newsletter.domain import Article
from newsletter.render.excerpts import ABSTRACT_CHARS, ABSTRACT_SLACK, abstract_cut, wrap_text
from newsletter.render.runs import tidy
from newsletter.render.shapes.fill import Variant, field_names
from newsletter.render.views import ENDS_SENTENCE, CardView, article_links, article_static

_CARD_FIELDS = field_names(CardView)
_HTML_SPECIAL = re.compile("[&<>'\"]")
CACHE_MAX = 20_000  # entries (and labels) kept before a cache starts again


# The fields every card of an entry shares (the fill merges them into the markup once).
_SHARED = frozenset(
    {
        "link",
        "byline",
        "date",
        "votes",
        "comments",
        "more_link",
        "title_text",
        "meta_text",
        "paper_link",
        "abs_link",
        "pdf_link",
        "text_link",
    }
)
_GROUPS = {  # (the title has no highlight, the plain abstract is the entry's): fields
    (False, False): _SHARED,
    (True, False): _SHARED | {"title"},
    (False, True): _SHARED | {"abstract_text"},
    (True, True): _SHARED | {"title", "abstract_text"},
}


class Entry:
    """What every card of one article shares."""

    __slots__ = (
        "abs_link",
        "abstract_text",
        "article",
        "byline",
        "comments",
        "cut",
        "date",
        "link",
        "main_ok",
        "meta",
        "more_link",
        "paper_link",
        "pdf_link",
        "rstrip_len",
        "statics",
        "suffix",
        "summary_esc",
        "text_link",
        "title_esc",
        "title_ok",
        "title_runs",
        "trimmed",
        "usual_variant",
        "variant",
        "votes",
    )

    def __init__(self, a: Article) -> None:
        self.article = a
        self.link, self.byline, self.date, self.votes, self.comments, self.meta = article_static(a)
        self.paper_link, self.abs_link, self.pdf_link, self.text_link = article_links(a)
        summary = a.summary
        self.trimmed = len(summary) > ABSTRACT_CHARS + ABSTRACT_SLACK  # as trim_plan decides
        self.cut = abstract_cut(summary, ABSTRACT_CHARS) if self.trimmed else len(summary)
        self.more_link = self.link if self.trimmed else ""
        self.rstrip_len = len(summary.rstrip())
        main = summary[: self.cut]
        self.main_ok = tidy(main)
        # _card's " …" rule for one shown range: cut short, and not at a sentence end.
        self.suffix = self.trimmed and self.cut < self.rstrip_len and not ENDS_SENTENCE.search(main)
        self.abstract_text = wrap_text(main + " …" if self.suffix else main) if self.main_ok else ""
        self.title_ok = tidy(a.title)
        self.title_runs = [a.title]
        self.title_esc = _HTML_SPECIAL.search(a.title) is not None
        self.summary_esc = _HTML_SPECIAL.search(summary) is not None
        # CardView's fields, in order, for fill_variant (rank, title, abstract and matched
        # are the card's own).
        self.variant = tuple(
            2 if v else 1
            for v in (
                self.link,
                self.byline,
                self.date,
                self.votes,
                self.more_link,
                self.paper_link,
                self.abs_link,
                self.pdf_link,
                self.comments,
                self.text_link,
            )
        )
        # ... and the whole of it for a card with a rank, an abstract, a "why" line and links
        self.usual_variant = card_variant(
            self, True, True, True, bool(self.abstract_text), False, True, True
        )
        # fill_static for each (no title highlight, the plain abstract is the entry's)
        self.statics = {key: (self, fields) for key, fields in _GROUPS.items()}


ENTRIES: dict[int, Entry] = {}


def entry_of(a: Article) -> Entry:
    """The shared part of ``a``'s cards, cached by identity (the matcher hands the same
    Article objects to every subscriber; the entry holds it, so the id stays unique)."""
    got = ENTRIES.get(id(a))
    if got is None or got.article is not a:
        if len(ENTRIES) >= CACHE_MAX:
            ENTRIES.clear()
        got = ENTRIES[id(a)] = Entry(a)
    return got


def card_variant(
    entry: Entry,
    rank: int,
    abstract: bool,
    matched: bool,
    text: bool,
    badge: bool,
    more_like: bool = False,
    fewer_like: bool = False,
) -> Variant:
    """``variant_of`` the card's view, from the truth of each of CardView's fields by name
    (the title and title_text are never empty)."""
    link, by, when, votes, more, paper, abs_link, pdf, comments, text_link = entry.variant
    truth = {
        "rank": 2 if rank else 1,
        "link": link,
        "title": 2,
        "byline": by,
        "date": when,
        "votes": votes,
        "comments": comments,
        "badge": 2 if badge else 1,
        "paper_link": paper,
        "abs_link": abs_link,
        "pdf_link": pdf,
        "text_link": text_link,
        "abstract": 2 if abstract else 1,
        "more_link": more,
        "matched": 2 if matched else 1,
        "title_text": 2,
        "meta_text": 2 if entry.meta else 1,
        "abstract_text": 2 if text else 1,
        "more_like_url": 2 if more_like else 1,
        "fewer_like_url": 2 if fewer_like else 1,
    }
    return tuple(truth[name] for name in _CARD_FIELDS)
