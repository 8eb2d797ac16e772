"""Handing finished messages to the world: a ``Sender`` interface and two implementations.

``SmtpSender`` (:mod:`newsletter.smtp`) speaks SMTP; ``PreviewSender`` writes ``.eml`` files. The
pipeline never asks which one it has (the way httpx's ``MockTransport`` is just another
transport), so preview mode runs exactly the code path that production runs.

Every sender calls ``before_data`` right before the point of no return — for SMTP, after
the server accepted the recipient and before ``DATA`` — so the pipeline can record the
digest as ``sending`` at the last moment when it still knows the message was not sent.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from newsletter.config import Settings
from newsletter.errors import ConfigError, DeliveryError

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


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", text)[:150] or "message"


class PreviewSender(Sender):
    """Writes each message to ``outbox/sent/<period>/<recipient>.eml`` instead of mailing.

    The write is atomic (temp file, fsync, rename), so a crash never leaves half a file
    that looks delivered.
    """

    def __init__(self, outbox_dir: Path) -> None:
        self.root = Path(outbox_dir) / "sent"

    def describe(self) -> str:
        return f"preview to {self.root}"

    def path_for(self, message: OutgoingMessage) -> Path:
        name = _safe_filename(message.recipient)
        if message.digest_id is not None:
            name = f"{name}-{message.digest_id}"
        return self.root / _safe_filename(message.period or "undated") / f"{name}.eml"

    def send(
        self, message: OutgoingMessage, before_data: Callable[[], None] = nothing_before_data
    ) -> Receipt:
        path = self.path_for(message)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeliveryError(
                f"cannot create {path.parent}: {e}", recipient=message.recipient, permanent=True
            ) from e
        before_data()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(message.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(
                f"cannot write {path}: {e}", recipient=message.recipient, permanent=True
            ) from e
        return Receipt(reply=f"written to {path}", message_id=message.message_id)


def make_sender(settings: Settings, *, env: dict[str, str] | None = None) -> Sender:
    """The sender ``[newsletter] delivery`` asks for."""
    if settings.newsletter.delivery == "preview":
        return PreviewSender(settings.newsletter.outbox_dir)
    smtp = settings.smtp
    password = settings.secret(smtp.password_env, env)
    if smtp.password_env and password is None:
        raise ConfigError(
            f"environment variable {smtp.password_env} is not set", key="smtp.password_env"
        )
    from newsletter.smtp import SmtpSender  # smtp builds on this module's interface

    return SmtpSender(smtp, password=password)
