"""Cards for the fast renderer: :func:`card_view`'s values without a view per card. Pure.

Subscribers rarely share a whole card (their keywords hit different words), so nothing
per card is worth caching; what repeats is per entry (link, byline, where the abstract
is cut, its wrapped plain text) and per keyword (a "why" line's parts). The highlighted
title and abstract reach the compiled template as runs of text (plain and marked in
turn) rather than :class:`~newsletter.render.excerpts.Segment` objects, which cost more to
build than the rest of an email. An entry whose shown text would need cleaning (control
characters, doubled spaces, spaces at its edges) goes through :func:`card_view`
instead, so the values are always the same; ``tests/test_render_fast.py`` checks that.

A worked example. Ada's keyword ``RLHF`` hits the title "Scaling RLHF to agents" at
characters 8–12. :func:`card_draft` finds the article's
:class:`~newsletter.render.card_entry.Entry` (built once for every subscriber: link,
byline, the abstract's cut and its wrapped text), and keeps of the hits only what is
Ada's:

* ``matched`` = ``"RLHF (title)"`` (labels memoised per keyword and fields);
* the title as runs, plain first: ``["Scaling ", "RLHF", " to agents"]`` with
  ``_title_v = (_PLAIN, _MARK)`` — the fill draws them as ``Scaling <mark>RLHF</mark> to
  agents`` from the two shapes of a segment, without building ``Segment`` objects;
* the abstract as one plain run (no hit in it), and ``fill_static`` naming the fields
  this card shares with the entry's other cards (link, byline, date, votes, the wrapped
  plain-text abstract, …): the fill merges their values into the entry's shape once and
  reuses it for every subscriber whose card has the same ``fill_static``;
* ``fill_variant``: the truth of each of :class:`CardView`'s fields.

Bob's card of the same entry, hit on "agents", shares the entry and differs only in its
runs and ``matched``.
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import pairwise

from newsletter.domain import Match
from newsletter.render.card_entry import CACHE_MAX, ENTRIES, Entry, card_variant, entry_of
from newsletter.render.excerpts import Segment, trim_plan
from newsletter.render.runs import add_plain, merge_spans, text_runs, tidy, wrap_tidy
from newsletter.render.shapes.fill import LazyItem, Rows, Variant, variant_of
from newsletter.render.views import (
    FIELD_LABEL,
    FIELD_ORDER,
    TRENDING_BADGE,
    CardView,
    card_view,
    clean_keyword,
    with_popularity,
)

_PLAIN: Variant = variant_of(Segment("x"))  # the variant of a non-empty run
_MARK: Variant = variant_of(Segment("x", True))
_BIT = {f: 1 << i for i, f in enumerate(FIELD_ORDER)}  # the "why" order: lowest bit first


# Highlight runs alternate between plain and marked (touching highlights are merged,
# and so are plain runs): a card hands them over as texts and the pair of variants.
_PLAIN_FIRST = (_PLAIN, _MARK)
_MARK_FIRST = (_MARK, _PLAIN)


_LABELS: dict[tuple[str, int], str] = {}


def _label(keyword: str, mask: int) -> str:
    got = _LABELS.get((keyword, mask))
    if got is None:
        fields = ", ".join(FIELD_LABEL[f] for f in FIELD_ORDER if mask & _BIT[f])
        if len(_LABELS) >= CACHE_MAX:
            _LABELS.clear()
        got = _LABELS[keyword, mask] = f"{keyword} ({fields})"
    return got


def _lowest_bit(item: tuple[str, int]) -> int:
    return item[1] & -item[1]


class CardDraft(LazyItem):
    """One card as the fast fill reads it: CardView's scalar fields and highlight runs.

    The entry's own values are read from the shared entry (or, for text that needs
    cleaning, from the real view, which is then built at once).
    """

    __slots__ = (
        "_abstract",
        "_abstract_esc",
        "_abstract_v",
        "_entry",
        "_rows",
        "_title",
        "_title_esc",
        "_title_v",
        "_view",
        "abstract_text",
        "badge",
        "fewer_like_url",
        "fill_static",
        "fill_variant",
        "keywords",
        "match",
        "matched",
        "more_like_url",
        "rank",
    )

    match: Match
    rank: int
    matched: str
    abstract_text: str
    badge: str  # the card's own (a trending pick for this subscriber)
    more_like_url: str  # the subscriber's own feedback links ("" without)
    fewer_like_url: str
    keywords: tuple[str, ...]  # the cleaned keywords that hit, for the subject's ranking
    fill_variant: Variant
    fill_static: tuple[Hashable, frozenset[str]] | None
    _entry: Entry | None
    _title: list[str]
    _abstract: list[str]
    _title_v: tuple[Variant, Variant]  # the variants the runs alternate between
    _abstract_v: tuple[Variant, Variant]
    _title_esc: bool
    _abstract_esc: bool
    _view: CardView | None
    _rows: dict[str, tuple[list[str], tuple[Variant, Variant]] | None] | None

    def __init__(
        self, match: Match, rank: int, more_like_url: str = "", fewer_like_url: str = ""
    ) -> None:
        # The other fields are set by card_draft, from the entry or from the real view.
        self.match = match
        self.rank = rank
        self.more_like_url = more_like_url
        self.fewer_like_url = fewer_like_url
        self._view = None
        self._rows = None

    def view(self) -> CardView:
        """The real view (what the reference path, probes and custom uses get)."""
        if self._view is None:
            self._view = card_view(self.match, self.rank, self.more_like_url, self.fewer_like_url)
        return self._view

    @property
    def link(self) -> str:
        return self._entry.link if self._entry else self.view().link

    @property
    def byline(self) -> str:
        return self._entry.byline if self._entry else self.view().byline

    @property
    def date(self) -> str:
        return self._entry.date if self._entry else self.view().date

    @property
    def votes(self) -> str:
        return self._entry.votes if self._entry else self.view().votes

    @property
    def comments(self) -> str:
        return self._entry.comments if self._entry else self.view().comments

    @property
    def text_link(self) -> str:
        return self._entry.text_link if self._entry else self.view().text_link

    @property
    def paper_link(self) -> str:
        return self._entry.paper_link if self._entry else self.view().paper_link

    @property
    def abs_link(self) -> str:
        return self._entry.abs_link if self._entry else self.view().abs_link

    @property
    def pdf_link(self) -> str:
        return self._entry.pdf_link if self._entry else self.view().pdf_link

    @property
    def more_link(self) -> str:
        return self._entry.more_link if self._entry else self.view().more_link

    @property
    def title_text(self) -> str:
        # clean() of a tidy title is the title
        return self._entry.article.title if self._entry else self.view().title_text

    @property
    def meta_text(self) -> str:
        return self._entry.meta if self._entry else self.view().meta_text

    @property
    def title(self) -> tuple[Segment, ...]:
        return self.view().title

    @property
    def abstract(self) -> tuple[Segment, ...]:
        return self.view().abstract

    def fill_rows(self, field: str) -> Rows | None:
        if self._rows is not None:  # (from the real view)
            got = self._rows.get(field)
            return (*got, True) if got is not None else None
        if field == "abstract":
            return self._abstract, self._abstract_v, self._abstract_esc
        if field == "title":
            return self._title, self._title_v, self._title_esc
        return None

    def __repr__(self) -> str:
        return f"CardDraft(rank={self.rank}, entry={self.match.article.id})"


def card_draft(
    match: Match, rank: int, more_like_url: str = "", fewer_like_url: str = ""
) -> CardDraft:
    """The card of ``match`` at ``rank``: the values :func:`card_view` gives, cheaply."""
    a = match.article
    entry = ENTRIES.get(id(a))
    if entry is None or entry.article is not a:
        entry = entry_of(a)
    d = CardDraft(match, rank, more_like_url, fewer_like_url)
    d.badge = TRENDING_BADGE if match.trending else ""
    title_spans: list[tuple[int, int]] = []
    abstract_spans: list[tuple[int, int]] = []
    raw: dict[str, int] = {}  # keyword as written -> the fields it hit (bits)
    for h in match.hits:
        field = h.field
        if field == "abstract":
            abstract_spans += h.spans
        elif field == "title":
            title_spans += h.spans
        raw[h.keyword] = raw.get(h.keyword, 0) | _BIT[field]
    masks: dict[str, int] = {}  # the same by cleaned keyword, in order of first hit
    for term, mask in raw.items():
        kw = clean_keyword(term)
        masks[kw] = masks.get(kw, 0) | mask
    d.keywords = tuple(masks)
    get = _LABELS.get
    if len(masks) > 1:
        items = sorted(masks.items(), key=_lowest_bit)
        d.matched = ", ".join([get(item) or _label(*item) for item in items])
    else:
        d.matched = "".join([get(item) or _label(*item) for item in masks.items()])
    if match.trending or match.popularity:
        d.matched = with_popularity(match, d.matched)
    if not (entry.title_ok and entry.main_ok):
        return _from_view(d)
    shared_text = _abstract(d, entry, abstract_spans)
    if shared_text is None:
        return _from_view(d)
    if title_spans:
        title: list[str] = []
        marked = text_runs(a.title, merge_spans(title_spans, len(a.title)), 0, len(a.title), title)
        d._title = title
        d._title_v = _MARK_FIRST if marked else _PLAIN_FIRST
    else:
        d._title = entry.title_runs
        d._title_v = _PLAIN_FIRST
    d._title_esc = entry.title_esc
    d._entry = entry
    d.fill_static = entry.statics[not title_spans, shared_text]
    if (
        rank
        and d._abstract
        and d.matched
        and shared_text
        and not d.badge
        and more_like_url
        and fewer_like_url
    ):
        d.fill_variant = entry.usual_variant
    else:
        d.fill_variant = card_variant(
            entry,
            rank,
            bool(d._abstract),
            bool(d.matched),
            bool(d.abstract_text),
            bool(d.badge),
            bool(more_like_url),
            bool(fewer_like_url),
        )
    return d


def _abstract(d: CardDraft, entry: Entry, spans: list[tuple[int, int]]) -> bool | None:
    """Set the abstract runs and text as _card would: None when only it can tell, else
    whether the plain text is the entry's own (one shown range)."""
    text = entry.article.summary
    cut = entry.cut
    merged = merge_spans(spans, len(text)) if spans else []
    runs: list[str] = []
    shared = not entry.trimmed or not merged or merged[0][0] < cut
    if shared:
        # One range, [0, cut): its plain text, and so its wrapped form, is the entry's.
        marked = text_runs(text, merged, 0, cut, runs)
        if entry.suffix:
            add_plain(runs, marked, " …")
        d.abstract_text = entry.abstract_text
    else:
        # Every hit lies beyond the cut: a second range shows the first one.
        ranges, _ = trim_plan(text, spans)
        if len(ranges) != 2:
            return None
        lo, hi = ranges[1]
        if text[lo : lo + 1] == " ":  # the window starts at a word boundary: its space
            lo += 1  # goes (when it is not highlighted)
            if merged[0][0] < lo:
                return None
        shown = text[lo:hi]
        if not tidy(shown):
            return None
        marked = False  # no highlight before the cut
        runs.append(text[:cut] + " … ")
        if not text_runs(text, merged, lo, hi, runs):  # merge the range's leading plain run
            runs[0:2] = [runs[0] + runs[1]]
        plain = text[:cut] + " … " + shown
        if hi < entry.rstrip_len:
            add_plain(runs, marked, " …")
            plain += " …"
        d.abstract_text = wrap_tidy(plain)
    d._abstract = runs
    d._abstract_v = _MARK_FIRST if marked else _PLAIN_FIRST
    d._abstract_esc = entry.summary_esc
    return shared


def _from_view(d: CardDraft) -> CardDraft:
    """Fill ``d`` from the real view: for text that needs cleaning."""
    v = d.view()
    d._entry = None
    d.fill_static = None
    d.abstract_text = v.abstract_text
    d._title_esc = d._abstract_esc = True
    d._rows = {"title": _alternating(v.title), "abstract": _alternating(v.abstract)}
    d.fill_variant = variant_of(v)
    return d


def _alternating(segs: tuple[Segment, ...]) -> tuple[list[str], tuple[Variant, Variant]] | None:
    """Cleaned segments as runs (cleaning merges neighbours of one kind: they alternate;
    None, and the fill takes the segments themselves, if they did not)."""
    if any(a.mark == b.mark for a, b in pairwise(segs)):
        return None
    return [s.text for s in segs], _MARK_FIRST if segs and segs[0].mark else _PLAIN_FIRST
