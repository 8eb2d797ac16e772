"""What the send pipeline asks of composition, and what it gets back.

``send`` hands a batch of :class:`DigestJob` (who, which period, which window of entries
is new to them) to a :data:`ComposeFn` and gets back, per subscriber, a :class:`Draft` —
the finished message and the entries it carries — or ``None`` when nothing new matched.
The pipeline isolates a digest that cannot be composed as a :class:`ComposeFailed`.
Composing is read-only: the outbox records the entries only when the message is about
to leave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class DigestJob:
    """One digest to compose: whose, which period, and which window of entries is new.

    Entries count when first fetched in ``(window_start, window_end]`` and never put in
    a digest of the subscriber before. ``send`` always gives the window (from the
    outbox, :func:`newsletter.db.candidates.window_starts`) and the digest row it
    claimed; ``preview`` gives neither, and the window then starts where
    :func:`newsletter.db.candidates.window_start` says.
    """

    subscriber_id: int
    period: str  # "2026-11-22" or "2026-W47", in the subscriber's timezone
    window_start: datetime | None  # exclusive; None: the outbox's rule above
    window_end: datetime  # inclusive: the moment of composing
    digest_id: int | None = None  # the outbox row, when composing for a send


@dataclass(frozen=True, slots=True)
class Draft:
    """A finished message for one subscriber and the entries it carries."""

    subscriber_id: int
    recipient: str
    subject: str
    message_id: str
    data: bytes
    entries: tuple[tuple[int, float], ...]  # (entry id, score), in rank order
    kept: bytes | None = None  # ``data`` as View in browser keeps it, when it does
    plain_lines: bool = False  # ``delivery.payload.plain_lines(data)``, checked composing


@dataclass(frozen=True, slots=True)
class ComposeFailed:
    """A digest that could not be composed; the outbox records ``reason``."""

    reason: str


Composed = Draft | ComposeFailed | None
"""A job's result: the message, why it failed, or None (nothing new to send)."""

ComposeFn = Callable[[Session, Sequence[DigestJob]], Mapping[int, Draft | None]]
"""Compose a batch: subscriber id -> its draft, or None when there is nothing new to send.
Side-effect free; may raise for the whole batch (the pipeline then isolates per digest)."""
