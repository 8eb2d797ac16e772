"""Popularity: the upvote term of the blended score, and the trending picks' order.

A match scores ``keyword score + weight * log1p(upvotes)``: the logarithm keeps a paper
with 500 upvotes from burying every keyword, and ``weight`` (``newsletter.
popularity_weight``) says how much an e-fold more upvotes is worth in keyword points
(a title hit is 3). Unknown or zero upvotes add nothing. Trending picks are the
candidates with at least one upvote, most upvoted first; ties go to the newer paper,
then the smaller id: the matcher's tie order, so both paths agree by construction.
"""

from __future__ import annotations

import math

from newsletter.domain import Article

__all__ = ["popularity", "trending_key"]


def popularity(upvotes: int | None, weight: float) -> float:
    """The upvote term of a blended score (0.0 when unknown, zero or unweighted)."""
    if not weight or upvotes is None or upvotes <= 0:
        return 0.0
    return weight * math.log1p(upvotes)


def trending_key(a: Article) -> tuple[int, float, int]:
    """Sort key of trending picks: more upvotes, then newer, then smaller id."""
    return (-(a.upvotes or 0), -a.published.timestamp(), a.id)
