"""What the renderer takes and gives: one digest request in, one rendered email out.

Split from :mod:`newsletter.render.renderer` (which re-exports both) so callers and the
renderer share these plain types without the rendering machinery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from newsletter.domain import Match, Profile


@dataclass(frozen=True, slots=True)
class DigestRequest:
    """Everything one email needs; URLs come from the caller (render makes no tokens)."""

    profile: Profile
    matches: Sequence[Match]
    day: date  # the subscriber's local day the digest is for
    period: str  # outbox period key: "2026-11-22" or "2026-W47"
    unsubscribe_url: str
    preferences_url: str = ""
    # entry id -> ("More like this", "Fewer like this") URLs; an entry without: no links
    feedback_urls: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    browser_url: str = ""  # "View in browser"; "": no kept copy
    sent_at: datetime | None = None  # Date header; None: the scheduled send time of `day`
    message_id: str = ""  # "" : stable per (list, subscriber, period)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    # The parts as text, or as their UTF-8 (the fast path makes bytes; a send never
    # reads them as text, so they are decoded only when asked for: see html and text).
    html_part: str | bytes
    text_part: str | bytes
    data: bytes  # the complete MIME message
    message_id: str
    sender: str  # envelope sender (the From address)
    recipient: str
    entry_ids: tuple[int, ...]  # entries shown, as cards or as "more" links
    n_cards: int
    n_more: int  # matches summarised as links (listed or only counted)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def html(self) -> str:
        part = self.html_part
        return part if isinstance(part, str) else part.decode("utf-8")

    @property
    def text(self) -> str:
        part = self.text_part
        return part if isinstance(part, str) else part.decode("utf-8")
