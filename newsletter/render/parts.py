"""The parts a renderer hands on: views made concrete for Jinja, and bodies as str.

The fast path works on bytes and card drafts; the reference path, the probes and the
MIME builder want str and real :class:`CardView` objects. These conversions are shared
by both paths, so they stay identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from newsletter.render.cards import CardDraft
from newsletter.render.mime import short_lines
from newsletter.render.views import CardView, EmailView

Card = CardView | CardDraft  # the fast path's cards are drafts; see card_drafts

# A lone surrogate as ``surrogatepass`` writes it (U+D800..U+DFFF): no valid UTF-8 has it.
SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


def view_context(view: EmailView) -> dict[str, Any]:
    # Probes are not dataclasses; both expose their fields as attributes.
    return {name: getattr(view, name) for name in EmailView.__dataclass_fields__}


def materialized_cards(cards: Sequence[Card]) -> tuple[CardView, ...]:
    return tuple(c.view() if isinstance(c, CardDraft) else c for c in cards)


def materialized(view: EmailView) -> EmailView:
    """``view`` with real CardViews, for templates rendered by Jinja (and for probes)."""
    if not any(isinstance(c, CardDraft) for c in view.cards):
        return view
    return replace(view, cards=materialized_cards(view.cards))


def short_str(html: str) -> str:
    """:func:`short_lines` of a str (the reference path's HTML)."""
    raw = html.encode("utf-8", "surrogatepass")
    short = short_lines(raw)
    return html if short is raw else short.decode("utf-8", "surrogatepass")


def as_str(part: str | bytes) -> str:
    return part if isinstance(part, str) else part.decode("utf-8", "surrogatepass")
