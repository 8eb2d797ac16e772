"""What the send pipeline asks of composition, and the composer it uses by default.

``send`` hands a batch of :class:`ComposeRequest` (who, which period, which window of
entries is new to them) to a :data:`ComposeFn` and gets back, per subscriber, a
:class:`Draft` — the finished message and the entries it carries — or ``None`` when
nothing new matched. Composing is read-only: the outbox records the entries only when
the message is about to leave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.pipeline.compose import Composer, DigestJob


@dataclass(frozen=True, slots=True)
class ComposeRequest:
    """One digest to compose: for whom, and which window of entries is new to them."""

    digest_id: int
    subscriber_id: int
    period: str
    window_start: datetime  # exclusive: entries first fetched after this
    window_end: datetime  # inclusive: the moment of composing


@dataclass(frozen=True, slots=True)
class Draft:
    """A finished message for one subscriber and the entries it carries."""

    subscriber_id: int
    recipient: str
    subject: str
    message_id: str
    data: bytes
    entries: tuple[tuple[int, float], ...]  # (entry id, score), in rank order


ComposeFn = Callable[[Session, Settings, Sequence[ComposeRequest]], dict[int, Draft | None]]
"""Compose a batch: subscriber id -> its draft, or None when there is nothing new to send.
Side-effect free; may raise for the whole batch (the pipeline then isolates per digest)."""


class ComposerAdapter:
    """The product's composer (:class:`pipeline.compose.Composer`) as a :data:`ComposeFn`.

    One per run: the composer caches compiled templates and the signing key.
    """

    def __init__(self, settings: Settings) -> None:
        self.composer = Composer(settings)

    def __call__(
        self, session: Session, settings: Settings, requests: Sequence[ComposeRequest]
    ) -> dict[int, Draft | None]:
        if not requests:
            return {}
        jobs = [
            DigestJob(r.subscriber_id, r.period, r.window_start, r.window_end) for r in requests
        ]
        # The Date header: now, the moment of composing (every request shares it).
        sent_at = max(r.window_end for r in requests)
        out: dict[int, Draft | None] = dict.fromkeys((r.subscriber_id for r in requests), None)
        for c in self.composer.compose(session, jobs, sent_at=sent_at):
            if c.email is not None:
                out[c.subscriber_id] = Draft(
                    subscriber_id=c.subscriber_id,
                    recipient=c.email.recipient,
                    subject=c.email.subject,
                    message_id=c.email.message_id,
                    data=c.email.data,
                    entries=c.entries,
                )
        return out
