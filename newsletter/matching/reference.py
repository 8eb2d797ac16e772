"""The matching rules stated plainly, one article at a time: the oracle for :class:`Matcher`.

No index, no cache, no cleverness: each keyword is compiled and searched in each field
of each article by a direct recursion over the rules listed in :mod:`newsletter.matching.matcher`.
Slow on purpose; the tests (and the property tests) hold the fast matcher to it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from newsletter.domain import FIELDS, Article, Field, Hit, Keyword, Match, Profile
from newsletter.matching.matcher import FIELD_FACTORS, Span
from newsletter.matching.popularity import popularity, trending_key
from newsletter.matching.textnorm import (
    Pattern,
    Token,
    compile_pattern,
    field_tokens,
    only_stop_words,
)

__all__ = ["reference_match", "reference_trending"]


def _reference_end(pat: Pattern, tokens: list[Token], p: int, j: int) -> int:
    norm = pat.normalise
    if j == len(pat.folds):
        return p
    if p >= len(tokens):
        return -1
    tok = tokens[p]
    ends = [-1]
    if norm(tok.fold) == pat.terms[j]:
        ends.append(_reference_end(pat, tokens, p + 1, j + 1))
    if j + 1 < len(pat.folds) and pat.joins[j]:
        head = pat.folds[j]
        rest = tok.fold[len(head) :]
        if tok.fold.startswith(head) and rest and norm(rest) == pat.terms[j + 1]:
            ends.append(_reference_end(pat, tokens, p + 1, j + 2))
    if tok.join_next:
        rest = pat.folds[j][len(tok.fold) :]
        if pat.folds[j].startswith(tok.fold) and rest and norm(rest) == norm(tokens[p + 1].fold):
            ends.append(_reference_end(pat, tokens, p + 2, j + 1))
    return max(ends)


def _reference_spans(pat: Pattern, tokens: list[Token]) -> tuple[Span, ...]:
    spans: list[Span] = []
    for p in range(len(tokens)):
        end = _reference_end(pat, tokens, p, 0)
        if end > p:
            spans.append((tokens[p].start, tokens[end - 1].end))
    spans.sort()
    merged: list[Span] = []
    for span in spans:
        if merged and span[0] < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], span[1]))
        else:
            merged.append(span)
    return tuple(merged)


def _reference_hits(kw: Keyword, fields: Mapping[Field, list[Token]]) -> list[Hit]:
    pat = compile_pattern(kw.term, exact=kw.exact)
    if not pat.folds or only_stop_words(pat.folds):
        return []
    hits = []
    for field in FIELDS:
        if kw.field is not None and field != kw.field:
            continue
        spans = _reference_spans(pat, fields[field])
        if spans:
            hits.append(Hit(kw.term, field, spans, kw.weight))
    return hits


def reference_match(
    articles: Sequence[Article],
    profile: Profile,
    *,
    candidates: Collection[int] | None = None,
    limit: int | None = None,
    popularity_weight: float = 0.0,
) -> list[Match]:
    """The matching rules applied one article at a time, without any index or cache."""
    results: list[Match] = []
    for article in articles:
        if candidates is not None and article.id not in candidates:
            continue
        fields = {f: field_tokens(article, f) for f in FIELDS}
        if any(_reference_hits(kw, fields) for kw in profile.exclude):
            continue
        hits: list[Hit] = []
        score = 0.0
        for kw in profile.keywords:
            kw_hits = _reference_hits(kw, fields)
            if not kw_hits:
                continue
            factors = 0.0
            for hit in kw_hits:
                factors += FIELD_FACTORS[hit.field]
            score += kw.weight * factors
            hits.extend(kw_hits)
        if hits:
            pop = popularity(article.upvotes, popularity_weight)
            results.append(Match(article, score + pop, tuple(hits), popularity=pop))
    results.sort(
        key=lambda m: (
            -m.score,
            m.article.upvotes is None,
            -(m.article.upvotes or 0),
            -m.article.published.timestamp(),
            m.article.id,
        )
    )
    return results if limit is None else results[:limit]


def reference_trending(
    articles: Sequence[Article],
    profile: Profile,
    *,
    candidates: Collection[int] | None = None,
    skip: Collection[int] = (),
) -> list[Match]:
    """``profile.trending`` most upvoted candidates (one upvote at least), not excluded
    and not in ``skip`` (the keyword picks), each with the hits it has."""
    if not profile.trending:
        return []
    chosen: list[Match] = []
    for article in sorted(articles, key=trending_key):
        if len(chosen) == profile.trending:
            break
        if not article.upvotes or article.id in skip:
            continue
        if candidates is not None and article.id not in candidates:
            continue
        fields = {f: field_tokens(article, f) for f in FIELDS}
        if any(_reference_hits(kw, fields) for kw in profile.exclude):
            continue
        chosen.append(Match(article, 0.0, (), trending=True))
    return chosen
