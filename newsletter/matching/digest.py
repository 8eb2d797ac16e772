"""What one digest carries: the keyword picks, then the trending picks.

The keyword picks are the best ``limit`` matches (blended with upvotes) among the
subscriber's new, never-sent entries; the trending picks are the profile's
``trending`` most upvoted of the trending candidates (those, plus the never-sent papers
listed in the last few days: upvotes arrive after the listing) that are not keyword
picks already (so a paper is never in a digest twice), after them. A paper sent once is
in neither set again, so it is never trending for that subscriber again.
"""

from __future__ import annotations

from collections.abc import Collection

from newsletter.domain import Match, Profile
from newsletter.matching.matcher import Matcher

__all__ = ["digest_picks"]


def digest_picks(
    matcher: Matcher,
    profile: Profile,
    *,
    candidates: Collection[int] | None,
    limit: int | None,
    popularity_weight: float = 0.0,
    trending_candidates: Collection[int] | None = None,
) -> tuple[Match, ...]:
    """The matches one digest shows, in the order it shows them.

    ``trending_candidates`` defaults to ``candidates``.
    """
    picks = (
        matcher.match(
            profile, candidates=candidates, limit=limit, popularity_weight=popularity_weight
        )
        if profile.keywords
        else []
    )
    pool = candidates if trending_candidates is None else trending_candidates
    trending = matcher.trending(profile, candidates=pool, skip={m.article.id for m in picks})
    return (*picks, *trending)
