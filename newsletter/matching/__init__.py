"""Matching: articles and profiles in, ranked and explained matches out.

Pure: no I/O, no ORM, no database. ``textnorm`` turns text and keywords into comparable
tokens, ``index`` indexes a batch's articles once, ``matcher`` scores every profile with
array operations, and ``reference`` is the plain version the tests hold it to. May
import ``domain`` only.
"""

from __future__ import annotations

from newsletter.matching.matcher import FIELD_FACTORS, Matcher, field_text

__all__ = ["FIELD_FACTORS", "Matcher", "field_text"]
