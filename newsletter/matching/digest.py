"""What one digest carries: the keyword picks, then the trending picks.

The keyword picks are the best ``limit`` matches (blended with upvotes); the trending
picks are the profile's ``trending`` most upvoted candidates that are not keyword
picks already (so a paper is never in a digest twice), after them. Both come from the
subscriber's window of new, never-sent entries, so a paper sent once is never
trending for them again.
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
) -> tuple[Match, ...]:
    """The matches one digest shows, in the order it shows them."""
    picks = (
        matcher.match(
            profile, candidates=candidates, limit=limit, popularity_weight=popularity_weight
        )
        if profile.keywords
        else []
    )
    trending = matcher.trending(profile, candidates=candidates, skip={m.article.id for m in picks})
    return (*picks, *trending)
