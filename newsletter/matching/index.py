"""The text side of :class:`~newsletter.matching.matcher.Matcher`: one batch of articles,
tokenised once, and where each keyword pattern occurs in it.

Every field of every article is tokenised, folded and stemmed once into an inverted
index from terms (and joinable word pairs) to positions; a pattern is then verified
only at the positions where it can start, instead of at every word of every text. The
rules are those listed in :mod:`newsletter.matching.matcher`.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from itertools import compress

from newsletter.domain import FIELDS, Article
from newsletter.matching.textnorm import BARRIER, Pattern, Words, field_words, term

__all__ = ["N_FIELDS", "Occurrences", "Plan", "Span", "TextIndex", "gc_paused"]

N_FIELDS = len(FIELDS)
_NO_POSITIONS: frozenset[int] = frozenset()

Span = tuple[int, int]
# One keyword's occurrences in one article: (field number, merged spans), in FIELDS order.
Occurrences = tuple[tuple[int, tuple[Span, ...]], ...]


@contextmanager
def gc_paused() -> Iterator[None]:
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
    """One field of one article as parallel tuples, for fast verification (tuples of
    plain values, which the garbage collector stops tracking)."""

    __slots__ = ("ends", "folds", "joins", "starts", "terms")

    def __init__(self, words: Words) -> None:
        self.folds = tuple(words.folds)
        self.terms = tuple([term(f) for f in words.folds])
        self.joins = tuple(words.joins)
        self.starts = tuple(words.starts)
        self.ends = tuple(words.ends)


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


class Plan:
    """One pattern against one index: where a match can start, by rule 1 (``firsts``,
    the postings of its first term) and by rules 2 and 3 (``joined``), by field slot.
    Made once per pattern; the spans of any article are found from it later."""

    __slots__ = ("firsts", "joined", "pattern", "single")

    def __init__(
        self,
        pattern: Pattern,
        firsts: dict[int, tuple[int, ...]],
        joined: dict[int, set[int]],
    ) -> None:
        self.pattern = pattern
        self.firsts = firsts
        self.joined = joined
        self.single = len(pattern.folds) == 1


class TextIndex:
    """Postings over every field of a batch; article ``i`` of ``articles`` is slot ``i``.

    Postings map a term to field slot to positions, in text order; a field slot is
    article slot * 4 + field number.
    """

    def __init__(self, articles: Sequence[Article]) -> None:
        with gc_paused():
            self._build(articles)
        self._sorted_folds = sorted(self._by_fold)
        self._heads = frozenset(head for head, _ in self._pair_term)
        self._exact_pairs: dict[tuple[str, str], dict[int, tuple[int, ...]]] | None = None

    def _build(self, articles: Sequence[Article]) -> None:
        """Tokenise every field once and build the postings, field by field: each
        field's positions are grouped by word first, so the shared tables see one
        entry per distinct word of a field (tuples, which the collector stops
        tracking: half a million postings cost nothing in a long send's full
        collections)."""
        self._fields: list[_FieldIndex] = []
        by_term: dict[str, dict[int, tuple[int, ...]]] = {}
        by_fold: dict[str, dict[int, tuple[int, ...]]] = {}
        pair_term: dict[tuple[str, str], dict[int, tuple[int, ...]]] = {}
        for article in articles:
            for field in FIELDS:
                fid = len(self._fields)
                fx = _FieldIndex(field_words(article, field))
                self._fields.append(fx)
                folds, terms = fx.folds, fx.terms
                at: defaultdict[str, list[int]] = defaultdict(list)
                for p, f in enumerate(folds):
                    at[f].append(p)
                at.pop(BARRIER, None)
                stems: dict[str, tuple[int, ...]] = {}
                for f, ps in at.items():
                    positions = by_fold.setdefault(f, {})[fid] = tuple(ps)
                    t = terms[ps[0]]
                    had = stems.get(t)
                    # Several words of one term ("model", "models"): their positions
                    # merged, in text order.
                    stems[t] = positions if had is None else tuple(sorted(had + positions))
                for t, positions in stems.items():
                    by_term.setdefault(t, {})[fid] = positions
                pairs: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
                for p in compress(range(len(folds)), fx.joins):
                    pairs[(folds[p], terms[p + 1])].append(p)
                for pair, ps in pairs.items():
                    pair_term.setdefault(pair, {})[fid] = tuple(ps)
        self._by_term = by_term
        self._by_fold = by_fold
        self._pair_term = pair_term

    @property
    def _pair_fold(self) -> dict[tuple[str, str], dict[int, tuple[int, ...]]]:
        """Joinable word pairs by their folded words, for exact keywords (made the
        first time one asks: most batches have none)."""
        found = self._exact_pairs
        if found is None:
            pairs: dict[tuple[str, str], dict[int, list[int]]] = {}
            with gc_paused():
                for fid, fx in enumerate(self._fields):
                    folds = fx.folds
                    for p in compress(range(len(folds)), fx.joins):
                        pairs.setdefault((folds[p], folds[p + 1]), {}).setdefault(fid, []).append(p)
                found = self._exact_pairs = {
                    pair: {fid: tuple(ps) for fid, ps in where.items()}
                    for pair, where in pairs.items()
                }
        return found

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
        heads = self._heads
        for cut in range(1, len(k0)):
            head = k0[:cut]
            # Only a word that joins the next can be the head of a pair: checking that
            # first skips stemming every tail of the keyword.
            if head in heads:
                for fid, ps in pairs.get((head, norm(k0[cut:])), {}).items():
                    starts.setdefault(fid, set()).update(ps)
        return starts

    def _pair_fields(self, pat: Pattern, j: int) -> set[int]:
        """Field slots where keyword word ``j`` can be written as two joinable words
        (rule 3): a joinable pair (a head of it, the rest's term) occurs there."""
        norm = pat.normalise
        word = pat.folds[j]
        pairs = self._pair_fold if pat.exact else self._pair_term
        heads = self._heads
        found: set[int] = set()
        for cut in range(1, len(word)):
            head = word[:cut]
            if head in heads:
                found.update(pairs.get((head, norm(word[cut:])), ()))
        return found

    def plan(self, pat: Pattern) -> Plan:
        """Where ``pat`` can start (nowhere for a pattern that never matches)."""
        if pat.never:
            return Plan(pat, {}, {})
        by_first = (self._by_fold if pat.exact else self._by_term).get(pat.terms[0], {})
        return Plan(pat, by_first, self._joined_starts(pat))

    def _spans(
        self,
        plan: Plan,
        fid: int,
        firsts: tuple[int, ...],
        others: Collection[int],
        *,
        any_one: bool = False,
    ) -> tuple[Span, ...]:
        """The merged spans of ``pat`` in field slot ``fid``, from its candidate starts
        (``firsts`` by rule 1, ``others`` by rules 2 and 3); with ``any_one``, only
        the first found (enough to know the field is hit)."""
        fx = self._fields[fid]
        pat, single = plan.pattern, plan.single
        if single and not others:
            # One word by rule 1 at each position, sorted: nothing to verify.
            # (Where rule 3 could reach a word further, the position is in ``others``.)
            if any_one:
                return ((fx.starts[firsts[0]], fx.ends[firsts[0]]),)
            starts, ends = fx.starts, fx.ends
            return tuple([(starts[p], ends[p]) for p in firsts])
        texts = fx.folds if pat.exact else fx.terms
        k1 = "" if single else pat.folds[1][0]
        t1 = "" if single else pat.terms[1]
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
                if any_one:
                    return tuple(spans)
        for p in others:
            end = _end(pat, fx, p, 0)
            if end > p:
                spans.append((fx.starts[p], fx.ends[end - 1]))
                if any_one:
                    return tuple(spans)
        return _merge(spans)

    def hit_fields(self, plan: Plan) -> list[int]:
        """The field slots the plan's pattern matches, ascending (so by article slot,
        then in FIELDS order); no spans: those are made only for what is shown
        (:meth:`occurrences_at`)."""
        by_first, joined = plan.firsts, plan.joined
        if plan.single and not joined:
            return list(by_first)  # built in field-slot order; every position matches
        spans = self._spans
        if plan.single:
            # Off the rules 2 and 3 starts every position is a match of its own.
            found = by_first.keys() - joined.keys()
            found.update(
                fid
                for fid, others in joined.items()
                if spans(plan, fid, by_first.get(fid, ()), others, any_one=True)
            )
            return sorted(found)
        pat = plan.pattern
        if len(pat.folds) != 2:
            return [
                fid
                for fid in sorted(by_first.keys() | joined.keys())
                if spans(
                    plan, fid, by_first.get(fid, ()), joined.get(fid, _NO_POSITIONS), any_one=True
                )
            ]
        # Two words. Off the rules 2 and 3 starts (``joined``) a match starts with the
        # first word by rule 1 and takes the second by rule 1 (the next word has its
        # term: a hit, nothing more to check) or by rule 3 (a joinable pair for it in
        # the field); rule 2 would need a third word.
        later = (self._by_fold if pat.exact else self._by_term).get(pat.terms[1], {})
        paired = self._pair_fields(pat, 1)
        hits: list[int] = []
        for fid in sorted((by_first.keys() & (later.keys() | paired)) | joined.keys()):
            firsts = by_first.get(fid, ())
            others = joined.get(fid)
            if others is None:
                seconds = later.get(fid)
                if seconds and any(p + 1 in seconds for p in firsts):
                    hits.append(fid)
                    continue
                if fid not in paired:
                    continue
            if spans(plan, fid, firsts, others or _NO_POSITIONS, any_one=True):
                hits.append(fid)
        return hits

    def occurrences_at(self, plan: Plan, slot: int) -> Occurrences:
        """Where the plan's pattern matches article ``slot``, in every field (empty:
        nowhere)."""
        by_first, joined = plan.firsts, plan.joined
        found: list[tuple[int, tuple[Span, ...]]] = []
        if plan.single and not joined:
            # The common case: every position of the word is a match of its own.
            for fid in range(slot * N_FIELDS, slot * N_FIELDS + N_FIELDS):
                positions = by_first.get(fid)
                if positions:
                    fx = self._fields[fid]
                    starts, ends = fx.starts, fx.ends
                    found.append((fid % N_FIELDS, tuple([(starts[p], ends[p]) for p in positions])))
            return tuple(found)
        for fid in range(slot * N_FIELDS, slot * N_FIELDS + N_FIELDS):
            firsts = by_first.get(fid, ())
            others = joined.get(fid, _NO_POSITIONS)
            if firsts or others:
                spans = self._spans(plan, fid, firsts, others)
                if spans:
                    found.append((fid % N_FIELDS, spans))
        return tuple(found)

    def find(self, pat: Pattern) -> dict[int, Occurrences]:
        """Article slot -> where ``pat`` matches it, in every field (all at once)."""
        plan = self.plan(pat)
        slots = dict.fromkeys(fid // N_FIELDS for fid in self.hit_fields(plan))
        return {slot: self.occurrences_at(plan, slot) for slot in slots}
