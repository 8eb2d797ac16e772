"""Pure keyword matching: articles and profiles in, ranked and explained matches out.

:class:`Matcher` indexes one batch of articles once (every field tokenised, folded and
stemmed once, an inverted index from terms to positions) and compiles each distinct
keyword once, caching its occurrences across profiles; matching a profile is then a few
dictionary look-ups per keyword. :func:`newsletter.matching_reference.reference_match`
states the same rules the plain way, one article at a time; the property tests hold
the two to identical results.

A keyword of words ``k1 .. km`` matches where the text has them as consecutive words,
each step being one of:

1. a text word whose term equals the keyword word's term (term: folded, American
   spelling, Snowball stem; with ``exact`` the folded word itself);
2. one text word written as two joinable keyword words: it starts with the first and
   the rest has the second's term ("multiobjective" for the keyword "multi objective");
3. two joinable text words for one keyword word: the keyword word starts with the first
   and the rest has the second's term ("multi-objective" for the keyword
   "multiobjective").

Spans are ``[start, end)`` offsets into :func:`field_text`; author and category spans
point into the names joined with ``"; "`` and never cross from one name to the next.
"""

from __future__ import annotations

import gc
import heapq
from bisect import bisect_left
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from newsletter.domain import FIELDS, Article, Field, Hit, Keyword, Match, Profile
from newsletter.textnorm import (
    BARRIER,
    LIST_SEPARATOR,
    Pattern,
    Token,
    compile_pattern,
    field_text,
    field_tokens,
    term,
)

__all__ = [
    "FIELD_FACTORS",
    "LIST_SEPARATOR",
    "Matcher",
    "field_text",
]

#: How much one matched keyword adds per field, times its weight.
FIELD_FACTORS: Mapping[Field, float] = {
    "title": 3.0,
    "abstract": 1.0,
    "author": 2.0,
    "category": 1.5,
}
_N_FIELDS = len(FIELDS)

Span = tuple[int, int]
# One keyword's occurrences in one article: (field number, merged spans), in FIELDS order.
Occurrences = tuple[tuple[int, tuple[Span, ...]], ...]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building big acyclic structures.

    An index holds millions of small objects; without this, full collections
    triggered by the allocations cost more than building it. Nothing built here forms
    a cycle, so reference counting alone frees it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _merge(spans: list[Span]) -> tuple[Span, ...]:
    spans.sort()
    merged: list[Span] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


class _FieldIndex:
    """One field of one article as parallel lists, for fast verification."""

    __slots__ = ("ends", "folds", "joins", "starts", "terms")

    def __init__(self, tokens: list[Token]) -> None:
        self.folds = [t.fold for t in tokens]
        self.terms = [term(f) for f in self.folds]
        self.joins = [t.join_next for t in tokens]
        self.starts = [t.start for t in tokens]
        self.ends = [t.end for t in tokens]


def _end(pat: Pattern, fx: _FieldIndex, p: int, j: int) -> int:
    """Furthest token position a match of ``pat[j:]`` starting at ``p`` ends at, or -1."""
    if j == len(pat.folds):
        return p
    if p >= len(fx.folds):
        return -1
    texts = fx.folds if pat.exact else fx.terms
    norm = pat.normalise
    best = -1
    if texts[p] == pat.terms[j]:
        best = _end(pat, fx, p + 1, j + 1)
    word, kw = fx.folds[p], pat.folds[j]
    if (
        j + 1 < len(pat.folds)
        and pat.joins[j]
        and len(word) > len(kw)
        and word.startswith(kw)
        and norm(word[len(kw) :]) == pat.terms[j + 1]
    ):
        best = max(best, _end(pat, fx, p + 1, j + 2))
    if (
        fx.joins[p]
        and len(kw) > len(word)
        and kw.startswith(word)
        and norm(kw[len(word) :]) == texts[p + 1]
    ):
        best = max(best, _end(pat, fx, p + 2, j + 1))
    return best


@dataclass(slots=True)
class _Compiled:
    """One keyword (term, exact, field) against one batch: where it matches, and its
    score contribution per article, also pre-multiplied by each weight asked for."""

    occ: dict[int, Occurrences]  # restricted to the keyword's field
    contrib: dict[int, float]  # slot -> sum of the factors of the matched fields
    by_weight: dict[float, dict[int, float]]

    def scaled(self, weight: float) -> dict[int, float]:
        found = self.by_weight.get(weight)
        if found is None:
            found = self.by_weight[weight] = {s: weight * c for s, c in self.contrib.items()}
        return found


class Matcher:
    """Matches many profiles against one batch of articles.

    Build it once per batch; it caches every keyword it has seen, so the second
    profile that asks for "RLHF" costs a dictionary look-up.
    """

    def __init__(self, articles: Sequence[Article]) -> None:
        self._articles = list(articles)
        self._slot_of: dict[int, int] = {}
        for slot, article in enumerate(self._articles):
            if article.id in self._slot_of:
                raise ValueError(f"article id {article.id} appears twice in the batch")
            self._slot_of[article.id] = slot
        # Ties: more upvotes (None lowest), then newer, then smaller id.
        order = sorted(
            range(len(self._articles)),
            key=lambda s: (
                self._articles[s].upvotes is None,
                -(self._articles[s].upvotes or 0),
                -self._articles[s].published.timestamp(),
                self._articles[s].id,
            ),
        )
        self._tie = [0] * len(order)
        for rank, slot in enumerate(order):
            self._tie[slot] = rank

        with _gc_paused():
            self._index()
        self._patterns: dict[tuple[str, bool], Pattern] = {}
        self._occurrences: dict[Pattern, dict[int, Occurrences]] = {}
        self._keywords: dict[tuple[str, bool, Field | None], _Compiled] = {}

    def _index(self) -> None:
        """Tokenise every field once and build the postings.

        Postings map a term to field slot to positions, in text order; a field slot
        is article slot * 4 + field number.
        """
        self._fields: list[_FieldIndex] = []
        by_term: dict[str, dict[int, list[int]]] = {}
        by_fold: dict[str, dict[int, list[int]]] = {}
        pair_term: dict[tuple[str, str], dict[int, list[int]]] = {}
        pair_fold: dict[tuple[str, str], dict[int, list[int]]] = {}
        for article in self._articles:
            for field in FIELDS:
                fid = len(self._fields)
                fx = _FieldIndex(field_tokens(article, field))
                self._fields.append(fx)
                folds, terms, joins = fx.folds, fx.terms, fx.joins
                for p, f in enumerate(folds):
                    if f == BARRIER:
                        continue
                    by_fold.setdefault(f, {}).setdefault(fid, []).append(p)
                    by_term.setdefault(terms[p], {}).setdefault(fid, []).append(p)
                    if joins[p]:
                        pair_fold.setdefault((f, folds[p + 1]), {}).setdefault(fid, []).append(p)
                        pair_term.setdefault((f, terms[p + 1]), {}).setdefault(fid, []).append(p)
        self._by_term = by_term
        self._by_fold = by_fold
        self._pair_term = pair_term
        self._pair_fold = pair_fold
        self._sorted_folds = sorted(by_fold)

    @property
    def articles(self) -> Sequence[Article]:
        return self._articles

    def _pattern(self, kw: Keyword) -> Pattern:
        key = (kw.term, kw.exact)
        pat = self._patterns.get(key)
        if pat is None:
            pat = self._patterns[key] = compile_pattern(kw.term, exact=kw.exact)
        return pat

    def _joined_starts(self, pat: Pattern) -> dict[int, set[int]]:
        """Positions where a match can begin with rule 2 or 3 (exactly those)."""
        norm = pat.normalise
        k0 = pat.folds[0]
        starts: dict[int, set[int]] = {}
        if len(pat.folds) > 1 and pat.joins[0]:
            want = pat.terms[1]
            folds = self._sorted_folds
            i = bisect_left(folds, k0)
            while i < len(folds) and folds[i].startswith(k0):
                word = folds[i]
                if len(word) > len(k0) and norm(word[len(k0) :]) == want:
                    for fid, ps in self._by_fold[word].items():
                        starts.setdefault(fid, set()).update(ps)
                i += 1
        pairs = self._pair_fold if pat.exact else self._pair_term
        for cut in range(1, len(k0)):
            head = k0[:cut]
            if head in self._by_fold:
                for fid, ps in pairs.get((head, norm(k0[cut:])), {}).items():
                    starts.setdefault(fid, set()).update(ps)
        return starts

    def _occurrences_of(self, pat: Pattern) -> dict[int, Occurrences]:
        """Article slot -> where ``pat`` matches it, in every field (cached)."""
        found = self._occurrences.get(pat)
        if found is not None:
            return found
        found = {} if pat.never else self._find(pat)
        self._occurrences[pat] = found
        return found

    def _find(self, pat: Pattern) -> dict[int, Occurrences]:
        single = len(pat.folds) == 1
        k1 = "" if single else pat.folds[1][0]
        t1 = "" if single else pat.terms[1]
        by_first = (self._by_fold if pat.exact else self._by_term).get(pat.terms[0], {})
        joined = self._joined_starts(pat)
        by_slot: dict[int, list[tuple[int, tuple[Span, ...]]]] = {}
        for fid in sorted(by_first.keys() | joined.keys()):
            fx = self._fields[fid]
            texts = fx.folds if pat.exact else fx.terms
            others = joined.get(fid, set())
            firsts = by_first.get(fid, ())
            if single and not others:
                # One word by rule 1 at each position, sorted: nothing to verify.
                # (Where rule 3 could reach a word further, the position is in
                # ``others``.)
                by_slot.setdefault(fid // _N_FIELDS, []).append(
                    (fid % _N_FIELDS, tuple([(fx.starts[p], fx.ends[p]) for p in firsts]))
                )
                continue
            spans: list[Span] = []
            for p in firsts:
                if p in others:
                    continue
                if single:
                    end = p + 1
                else:
                    # The next step must take the next word by rule 1, or by rule
                    # 2 or 3, which both need its first letter.
                    q = p + 1
                    if q >= len(texts) or (texts[q] != t1 and fx.folds[q][0] != k1):
                        continue
                    end = _end(pat, fx, p, 0)
                if end > p:
                    spans.append((fx.starts[p], fx.ends[end - 1]))
            for p in others:
                end = _end(pat, fx, p, 0)
                if end > p:
                    spans.append((fx.starts[p], fx.ends[end - 1]))
            if spans:
                by_slot.setdefault(fid // _N_FIELDS, []).append((fid % _N_FIELDS, _merge(spans)))
        return {slot: tuple(occ) for slot, occ in by_slot.items()}

    def _compiled(self, kw: Keyword) -> _Compiled:
        key = (kw.term, kw.exact, kw.field)
        compiled = self._keywords.get(key)
        if compiled is None:
            with _gc_paused():
                compiled = self._keywords[key] = self._compile(kw)
        return compiled

    def prepare(self, profiles: Iterable[Profile]) -> None:
        """Compile the keywords of many profiles at once, before matching them.

        Optional (``match`` compiles what it meets), but cheaper for a large batch:
        the garbage collector stays paused for the whole compilation instead of
        scanning the growing caches again and again.
        """
        known = self._keywords
        with _gc_paused():
            for profile in profiles:
                for kw in (*profile.keywords, *profile.exclude):
                    key = (kw.term, kw.exact, kw.field)
                    if key not in known:
                        known[key] = self._compile(kw)

    def _compile(self, kw: Keyword) -> _Compiled:
        occ = self._occurrences_of(self._pattern(kw))
        if kw.field is not None:
            wanted = FIELDS.index(kw.field)
            occ = {
                slot: kept
                for slot, o in occ.items()
                if (kept := tuple(x for x in o if x[0] == wanted))
            }
        contrib: dict[int, float] = {}
        for slot, o in occ.items():
            c = 0.0
            for f, _spans in o:
                c += FIELD_FACTORS[FIELDS[f]]
            contrib[slot] = c
        return _Compiled(occ, contrib, {})

    def match(
        self,
        profile: Profile,
        *,
        candidates: Collection[int] | None = None,
        limit: int | None = None,
    ) -> list[Match]:
        """The articles ``profile`` matches, best first, each with its explanation.

        ``candidates`` restricts the result to those article ids; ``limit`` keeps the
        top ones (default: all).
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        allowed: set[int] | None = None
        if candidates is not None:
            allowed = {self._slot_of[i] for i in candidates if i in self._slot_of}
            if len(allowed) == len(self._articles):
                allowed = None  # every article is a candidate: nothing to filter
        known = self._keywords
        compiled: list[tuple[Keyword, _Compiled]] = []
        for kw in profile.keywords:
            comp = known.get((kw.term, kw.exact, kw.field)) or self._compiled(kw)
            if comp.occ:
                compiled.append((kw, comp))
        scores: dict[int, float] = {}
        for kw, comp in compiled:
            scaled = comp.by_weight.get(kw.weight) or comp.scaled(kw.weight)
            if allowed is not None:
                scaled = {slot: v for slot, v in scaled.items() if slot in allowed}
            # Walk the smaller of the two dicts: float addition is commutative and
            # 0.0 + v == v, so every sum is still the one the reference makes, keyword
            # by keyword in profile order.
            if len(scaled) > len(scores):
                merged = dict(scaled)
                get = merged.get
                for slot, s in scores.items():
                    merged[slot] = s + get(slot, 0.0)
                scores = merged
            else:
                get = scores.get
                for slot, v in scaled.items():
                    scores[slot] = get(slot, 0.0) + v
        if not scores:
            return []
        for kw in profile.exclude:
            for slot in self._compiled(kw).occ:
                scores.pop(slot, None)
        tie = self._tie
        if limit is not None and len(scores) > limit:
            if limit == 0:
                return []
            # Only what can reach the top ``limit`` is sorted in full.
            floor = heapq.nlargest(limit, scores.values())[-1]
            ranked = [(-s, tie[slot], slot) for slot, s in scores.items() if s >= floor]
        else:
            ranked = [(-s, tie[slot], slot) for slot, s in scores.items()]
        ranked.sort()
        if limit is not None:
            del ranked[limit:]
        articles = self._articles
        matches: list[Match] = []
        for neg, _tie, slot in ranked:
            hits: list[Hit] = []
            for kw, comp in compiled:
                for f, spans in comp.occ.get(slot, ()):
                    hits.append(Hit(kw.term, FIELDS[f], spans, kw.weight))
            matches.append(Match(articles[slot], -neg, tuple(hits)))
        return matches
