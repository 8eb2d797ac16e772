"""The ``Sender`` interface every transport implements, and what it takes and gives back.

``SmtpSender`` (:mod:`.smtp`) speaks SMTP; ``PreviewSender`` (:mod:`.preview`) writes
``.eml`` files. The pipeline never asks which one it has (the way httpx's
``MockTransport`` is just another transport), so preview mode runs exactly the code
path that production runs.

Every sender calls ``before_data`` before the point of no return — for SMTP, after the
server accepted the recipient and before ``DATA``; with PIPELINING (RFC 2920), before
the one write of MAIL, RCPT and DATA — so the pipeline can record the digest as
``sending`` while it still knows the message was not sent. Whatever the server refuses
after that is raised as usual, for the pipeline to fail or reschedule the marked digest.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from newsletter.errors import DeliveryError

log = logging.getLogger(__name__)


class SmtpUnavailableError(DeliveryError):
    """The server cannot be used at all (connect, greeting, TLS or login failed).

    Not the message's fault, so the pipeline charges no attempt to the digest: it stops
    the round and leaves the digests pending. ``permanent`` means retrying will not help
    without a configuration change (bad password, certificate not trusted).
    """


class SmtpThrottledError(DeliveryError):
    """A temporary reply that asks the client to slow down (421/451/452 "rate ...")."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One finished message and its envelope."""

    envelope_from: str
    recipient: str
    data: bytes  # the complete RFC 5322 message
    message_id: str = ""
    digest_id: int | None = None
    period: str | None = None  # names the preview file
    # ``payload.plain_lines(data)`` was checked (by composing): no CRLF fixing or dot
    # stuffing to do. Whoever changes ``data`` must drop it.
    plain_lines: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the transport answered: kept with the digest as evidence of delivery."""

    reply: str
    message_id: str


def nothing_before_data() -> None:
    return None


class Sender(ABC):
    """Delivers messages; thread-safe, so ``parallelism`` threads may share one."""

    parallelism: int = 1

    @abstractmethod
    def send(
        self, message: OutgoingMessage, before_data: Callable[[], None] = nothing_before_data
    ) -> Receipt:
        """Deliver ``message`` or raise :class:`DeliveryError`.

        ``before_data`` runs once the message is about to leave; if it raises, nothing
        is sent and the exception propagates.
        """

    def close(self) -> None:
        """Release connections; the sender may be used again afterwards."""
        return None

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self) -> Sender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def backoff_seconds(
    attempt: int, base: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random.

    ``attempt`` counts from 1; the delay doubles each time up to ``maximum`` and is never
    below half of it, so a herd of retries spreads out without retrying too early.
    """
    ceiling = min(maximum, base * 2.0 ** max(0, attempt - 1))
    r: float = rng.random() if rng is not None else random.random()
    return ceiling / 2 + ceiling / 2 * r
