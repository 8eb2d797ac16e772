"""Words and dates the emails print: day and period labels, plurals, the lead's reason.

Pure and small, split from :mod:`newsletter.render.views` so the card and view code
stays readable; ``views`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from newsletter.domain import Match

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def day_label(d: date) -> str:
    return f"{_DAYS[d.weekday()]} {d.day} {_MONTHS[d.month - 1]}"


def date_label(d: datetime | date) -> str:
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def period_labels(day: date, frequency: str) -> tuple[str, str]:
    """("Sun 22 Nov", "today") or ("the week of Mon 16 Nov", "this week")."""
    if frequency == "weekly":
        return f"the week of {day_label(day - timedelta(days=day.weekday()))}", "this week"
    return day_label(day), "today"


def lead_reason(matches: Sequence[Match]) -> str:
    """Why the digest's entries are in it, after the count: keywords, upvotes, or both."""
    trending = sum(1 for m in matches if m.trending)
    if not trending:
        return "matched your keywords"
    if trending == len(matches):
        return "is trending" if trending == 1 else "are trending"
    return "matched your keywords or are trending"


def plural(noun: str) -> str:
    """English plural of a configured noun: "paper" -> "papers", "entry" -> "entries"."""
    low = noun.lower()
    if low.endswith("y") and low[-2:-1] not in ("", "a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def counted(n: int, noun: str) -> str:
    """ "1 paper", "3 papers"."""
    return f"{n} {noun if n == 1 else plural(noun)}"


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip(" ,;:") + "…"
