"""Pure keyword matching: articles and profiles in, ranked and explained matches out.

:class:`Matcher` indexes one batch of articles once (:class:`~newsletter.matching.index.
TextIndex`: every field tokenised, folded and stemmed once, an inverted index from terms
to positions) and compiles each distinct keyword once into the articles it hits and
its score contribution to each, as arrays; matching a profile is then a few array
operations, and only the top results are explained. :func:`newsletter.matching.reference.
reference_match` states the same rules the plain way, one article at a time; the
property tests hold the two to identical results.

A keyword of words ``k1 .. km`` matches where the text has them as consecutive words,
each step being one of:

1. a text word whose term equals the keyword word's term (term: folded, American
   spelling, Snowball stem; with ``exact`` the folded word itself);
2. one text word written as two joinable keyword words: it starts with the first and
   the rest has the second's term ("multiobjective" for the keyword "multi objective");
3. two joinable text words for one keyword word: the keyword word starts with the first
   and the rest has the second's term ("multi-objective" for the keyword
   "multiobjective").

Words are those of :mod:`~newsletter.matching.textnorm`: in Chinese and Japanese each
character is one (never joinable), so a keyword of several characters matches where they
stand consecutively inside a longer run.

Spans are ``[start, end)`` offsets into :func:`field_text`; author and category spans
point into the names joined with ``"; "`` and never cross from one name to the next.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from newsletter.domain import FIELDS, Article, Field, Hit, Keyword, Match, Profile
from newsletter.matching.index import N_FIELDS, Occurrences, Plan, Span, TextIndex, gc_paused
from newsletter.matching.popularity import popularity
from newsletter.matching.textnorm import LIST_SEPARATOR, compile_pattern, field_text

__all__ = [
    "FIELD_FACTORS",
    "LIST_SEPARATOR",
    "Matcher",
    "Span",
    "field_text",
]

#: How much one matched keyword adds per field, times its weight.
FIELD_FACTORS: Mapping[Field, float] = {
    "title": 3.0,
    "abstract": 1.0,
    "author": 2.0,
    "category": 1.5,
}
_FACTOR_ARRAY = np.array([FIELD_FACTORS[f] for f in FIELDS], dtype=np.float64)
_maximum = np.maximum.reduce
_minimum = np.minimum.reduce
# Candidate sets remembered (a send's subscribers share a handful of windows).
_MASKS_KEPT = 64

Slots = npt.NDArray[np.intp]
Floats = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


class _Compiled:
    """One keyword (term, exact, field) against one batch: the slots it hits, in
    order, and its score contribution to each (the factors of the fields hit). Its
    spans are found only for the slots a profile shows (:meth:`occurrences`)."""

    __slots__ = ("by_weight", "contrib", "field", "index", "plan", "slots", "term")

    def __init__(self, term: str, index: TextIndex, plan: Plan, field: int | None) -> None:
        self.term = term
        self.index = index
        self.plan = plan
        self.field = field
        fids = index.hit_fields(plan)
        if field is not None:
            fids = [fid for fid in fids if fid % N_FIELDS == field]
        if fids:
            at = np.array(fids, dtype=np.intp)
            slot_of = at // N_FIELDS
            first = np.flatnonzero(np.concatenate(([True], slot_of[1:] != slot_of[:-1])))
            self.slots: Slots = slot_of[first]
            # Summed in FIELDS order, as the reference does (from 0.0: x + 0.0 is x).
            self.contrib: Floats = np.add.reduceat(_FACTOR_ARRAY[at % N_FIELDS], first)
        else:
            self.slots = np.zeros(0, dtype=np.intp)
            self.contrib = np.zeros(0, dtype=np.float64)
        self.by_weight: dict[float, _Weighted] = {}

    def occurrences(self, slot: int) -> Occurrences:
        """Where the keyword matches article ``slot`` (one it hits), in its field."""
        found = self.index.occurrences_at(self.plan, slot)
        if self.field is not None:
            return tuple(x for x in found if x[0] == self.field)
        return found

    def weighted(self, weight: float) -> _Weighted:
        """This keyword at ``weight``; kept only for a float weight, so that its
        hits always carry the very weight the profile gave (``3`` and ``3.0``
        are one dictionary key)."""
        found = self.by_weight.get(weight) if type(weight) is float else None
        if found is None:
            found = _Weighted(self, weight)
            if type(weight) is float:
                self.by_weight[weight] = found
        return found


class _Weighted:
    """One keyword at one weight: ``weight * contrib`` (the IEEE product the reference
    makes) and the hits that explain it, built the first time an article makes a
    profile's top and shared from then on (a ``Hit`` is immutable; a popular article
    is in many profiles' tops)."""

    __slots__ = ("compiled", "hits", "scaled", "slots", "weight")

    def __init__(self, compiled: _Compiled, weight: float) -> None:
        self.compiled = compiled
        self.slots = compiled.slots
        self.scaled: Floats = weight * compiled.contrib
        self.weight = weight
        self.hits: dict[int, tuple[Hit, ...]] = {}

    def hits_at(self, slot: int) -> tuple[Hit, ...]:
        """The hits at ``slot`` (one the keyword hits)."""
        term, weight = self.compiled.term, self.weight
        found = self.hits[slot] = tuple(
            [Hit(term, FIELDS[f], spans, weight) for f, spans in self.compiled.occurrences(slot)]
        )
        return found


class Matcher:
    """Matches many profiles against one batch of articles.

    Build it once per batch; it caches every keyword it has seen, so the second
    profile that asks for "RLHF" costs a dictionary look-up. Internally article slots
    are numbered in tie-break order (more upvotes, None lowest; then newer; then
    smaller id), so among equal scores the smaller slot ranks first.
    """

    def __init__(self, articles: Sequence[Article]) -> None:
        self._articles = list(articles)
        seen: set[int] = set()
        for article in self._articles:
            if article.id in seen:
                raise ValueError(f"article id {article.id} appears twice in the batch")
            seen.add(article.id)
        self._ranked = sorted(
            self._articles,
            key=lambda a: (
                a.upvotes is None,
                -(a.upvotes or 0),
                -a.published.timestamp(),
                a.id,
            ),
        )
        self._slot_of = {a.id: slot for slot, a in enumerate(self._ranked)}
        self._by_id: dict[int, Article] | None = None
        self._text = TextIndex(self._ranked)
        self._plans: dict[tuple[str, bool], Plan] = {}
        self._keywords: dict[tuple[str, bool, Field | None], _Compiled] = {}
        self._masks: dict[frozenset[int], Mask | None] = {}
        self._popularity: dict[float, Floats] = {}
        # Slots of articles with an upvote, in slot order: already the trending order.
        self._upvoted = np.array(
            [s for s, a in enumerate(self._ranked) if a.upvotes], dtype=np.intp
        )

    @property
    def articles(self) -> Sequence[Article]:
        return self._articles

    @property
    def by_id(self) -> Mapping[int, Article]:
        """The batch's articles by id."""
        found = self._by_id
        if found is None:
            found = self._by_id = {a.id: a for a in self._articles}
        return found

    def _plan(self, kw: Keyword) -> Plan:
        key = (kw.term, kw.exact)
        plan = self._plans.get(key)
        if plan is None:
            pattern = compile_pattern(kw.term, exact=kw.exact)
            plan = self._plans[key] = self._text.plan(pattern)
        return plan

    def _compiled(self, kw: Keyword) -> _Compiled:
        key = (kw.term, kw.exact, kw.field)
        compiled = self._keywords.get(key)
        if compiled is None:
            with gc_paused():
                compiled = self._keywords[key] = self._compile(kw)
        return compiled

    def prepare(self, profiles: Iterable[Profile]) -> None:
        """Compile the keywords of many profiles at once, before matching them.

        Optional (``match`` compiles what it meets), but cheaper for a large batch:
        the garbage collector stays paused for the whole compilation instead of
        scanning the growing caches again and again.
        """
        known = self._keywords
        with gc_paused():
            for profile in profiles:
                for kw in (*profile.keywords, *profile.exclude):
                    key = (kw.term, kw.exact, kw.field)
                    if key not in known:
                        known[key] = self._compile(kw)

    def _compile(self, kw: Keyword) -> _Compiled:
        field = None if kw.field is None else FIELDS.index(kw.field)
        return _Compiled(kw.term, self._text, self._plan(kw), field)

    def _allowed(self, candidates: Collection[int]) -> Mask | None:
        """The candidates as a mask over slots; None when every article is one.

        Remembered per frozenset: a send's subscribers mostly share one window.
        """
        key = candidates if isinstance(candidates, frozenset) else None
        if key is not None and key in self._masks:
            return self._masks[key]
        slot_of = self._slot_of
        mask = np.zeros(len(self._ranked), dtype=np.bool_)
        mask[[slot_of[i] for i in candidates if i in slot_of]] = True
        found = None if mask.all() else mask
        if key is not None:
            if len(self._masks) >= _MASKS_KEPT:
                self._masks.clear()
            self._masks[key] = found
        return found

    def match(
        self,
        profile: Profile,
        *,
        candidates: Collection[int] | None = None,
        limit: int | None = None,
        popularity_weight: float = 0.0,
    ) -> list[Match]:
        """The articles ``profile`` matches, best first, each with its explanation.

        ``candidates`` restricts the result to those article ids; ``limit`` keeps the
        top ones (default: all); ``popularity_weight`` blends in the upvotes
        (:func:`~newsletter.matching.popularity.popularity`).
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        known = self._keywords
        weighted: list[_Weighted] = []
        for kw in profile.keywords:
            comp = known.get((kw.term, kw.exact, kw.field)) or self._compiled(kw)
            if len(comp.slots):
                w = kw.weight
                per = comp.by_weight.get(w) if type(w) is float else None
                weighted.append(per or comp.weighted(w))
        if not weighted or limit == 0:
            return []
        # Every (slot, weighted contribution) of the profile, keyword by keyword.
        if len(weighted) == 1:
            at, add = weighted[0].slots, weighted[0].scaled
        else:
            at = np.concatenate([per.slots for per in weighted])
            add = np.concatenate([per.scaled for per in weighted])
        pop = self._popularity_of(popularity_weight)
        slots, scores = self._ranking(at, add, profile.exclude, candidates, limit, pop)
        matches = self._explained(weighted, at, slots, scores)
        if pop is None:
            return matches
        return [
            Match(m.article, m.score, m.hits, popularity=float(pop[slot]))
            for m, slot in zip(matches, slots, strict=True)
        ]

    def _popularity_of(self, weight: float) -> Floats | None:
        """Each slot's upvote term for ``weight`` (None when it adds nothing), cached."""
        if not weight or not len(self._upvoted):
            return None
        found = self._popularity.get(weight)
        if found is None:
            found = self._popularity[weight] = np.array(
                [popularity(a.upvotes, weight) for a in self._ranked], dtype=np.float64
            )
        return found

    def trending(
        self,
        profile: Profile,
        *,
        candidates: Collection[int] | None = None,
        skip: Collection[int] = (),
    ) -> list[Match]:
        """The ``profile.trending`` most upvoted candidates, not excluded, not in ``skip``.

        Slots are numbered in trending order already, so these are the first allowed
        slots among the upvoted ones.
        """
        if not profile.trending or not len(self._upvoted):
            return []
        ok = np.ones(len(self._ranked), dtype=np.bool_)
        known = self._keywords
        for kw in profile.exclude:
            ex = known.get((kw.term, kw.exact, kw.field)) or self._compiled(kw)
            ok[ex.slots] = False
        if candidates is not None:
            allowed = self._allowed(candidates)
            if allowed is not None:
                ok &= allowed
        slot_of = self._slot_of
        ok[[slot_of[i] for i in skip if i in slot_of]] = False
        chosen = self._upvoted[ok[self._upvoted]][: profile.trending]
        return [Match(self._ranked[s], 0.0, (), trending=True) for s in chosen.tolist()]

    def _ranking(
        self,
        at: Slots,
        add: Floats,
        exclude: Sequence[Keyword],
        candidates: Collection[int] | None,
        limit: int | None,
        pop: Floats | None = None,
    ) -> tuple[list[int], list[float]]:
        """The slots to show, best first, and their scores.

        ``bincount`` adds the weighted contributions in input order, starting from
        0.0: keyword by keyword in profile order, the very sums the reference makes.
        """
        n = len(self._ranked)
        total = np.bincount(at, add, n)
        hit = np.zeros(n, dtype=np.bool_)
        hit[at] = True
        known = self._keywords
        for kw in exclude:
            ex = known.get((kw.term, kw.exact, kw.field)) or self._compiled(kw)
            hit[ex.slots] = False
        if candidates is not None:
            allowed = self._allowed(candidates)
            if allowed is not None:
                hit &= allowed
        found = hit.nonzero()[0]
        scores = total[found] if pop is None else total[found] + pop[found]
        count = len(found)
        if limit is not None and count >= 4 * limit:
            # Keep only what can make the top: the maxima of ``limit`` chunks are
            # ``limit`` scores, so the smallest of them is at most the limit-th best.
            chunk = count // limit
            maxima = _maximum(scores[: limit * chunk].reshape(limit, chunk), axis=1)
            keep = (scores >= _minimum(maxima)).nonzero()[0]
            found, scores = found[keep], scores[keep]
        # Slots are in tie order, so a stable sort by score alone ranks exactly.
        order = (-scores).argsort(kind="stable")[:limit]
        return found[order].tolist(), scores[order].tolist()

    def _explained(
        self, weighted: list[_Weighted], at: Slots, slots: list[int], scores: list[float]
    ) -> list[Match]:
        """The matches, with the hits of each keyword (in profile order) at each slot.

        Which keyword hits which shown slot is read off ``at`` with array operations:
        looking each pair up in the keywords' own tables costs a cache miss apiece.
        """
        shown = np.zeros(len(self._ranked), dtype=np.bool_)
        shown[slots] = True
        where = shown[at].nonzero()[0]  # positions in ``at``, keyword by keyword
        sizes = [len(per.slots) for per in weighted]
        ends = np.cumsum(sizes)
        which = ends.searchsorted(where, side="right")  # the keyword of each position
        hits: dict[int, list[Hit]] = {slot: [] for slot in slots}
        for k, slot in zip(which.tolist(), at[where].tolist(), strict=True):
            per = weighted[k]
            hits[slot] += per.hits.get(slot) or per.hits_at(slot)
        articles = self._ranked
        return [
            Match(articles[slot], score, tuple(hits[slot]))
            for slot, score in zip(slots, scores, strict=True)
        ]
