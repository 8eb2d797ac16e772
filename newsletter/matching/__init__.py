"""Matching: articles and profiles in, ranked and explained matches out.

Pure: no I/O, no ORM, no database. ``textnorm`` turns text and keywords into comparable
tokens, ``index`` indexes a batch's articles once, ``matcher`` scores every profile with
array operations, ``popularity`` blends in upvotes, ``digest`` picks what one digest
carries (keyword picks, then trending picks), and ``reference`` is the plain version the
tests hold the matcher to. May import ``domain`` only.
"""

from __future__ import annotations

from newsletter.matching.digest import digest_picks
from newsletter.matching.matcher import FIELD_FACTORS, Matcher, field_text
from newsletter.matching.popularity import popularity

__all__ = ["FIELD_FACTORS", "Matcher", "digest_picks", "field_text", "popularity"]
