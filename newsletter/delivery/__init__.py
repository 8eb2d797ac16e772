"""Delivery: hands finished messages to the world through one ``Sender`` interface.

``base`` holds the interface and the value types; each transport is a module of its
own (``smtp``, ``preview``), and :func:`make_sender` picks the one the configuration
asks for, wrapped in a DKIM signer (:mod:`.dkim`) when ``[dkim]`` is set.
May import ``config`` and ``errors``; never ``db``, ``render`` or above.
"""

from __future__ import annotations

from newsletter.config import Settings, check_base_url_for_smtp
from newsletter.delivery.base import (
    OutgoingMessage,
    Receipt,
    Sender,
    SmtpThrottledError,
    SmtpUnavailableError,
    backoff_seconds,
    nothing_before_data,
)
from newsletter.delivery.preview import PreviewSender
from newsletter.errors import ConfigError


def make_sender(settings: Settings, *, env: dict[str, str] | None = None) -> Sender:
    """The sender ``[newsletter] delivery`` asks for, signing when ``[dkim]`` says so.

    SMTP is refused (:class:`ConfigError`) for a loopback or plain-http ``base_url``
    unless ``allow_insecure_base_url`` is set: the links would not work for recipients.
    """
    sender = _transport(settings, env)
    if not settings.dkim.enabled:
        return sender
    from newsletter.delivery.dkim import DkimSigner, SigningSender  # dkimpy only when used

    return SigningSender(sender, DkimSigner.from_settings(settings.dkim))


def _transport(settings: Settings, env: dict[str, str] | None) -> Sender:
    if settings.newsletter.delivery == "preview":
        return PreviewSender(settings.newsletter.outbox_dir)
    check_base_url_for_smtp(settings)
    smtp = settings.smtp
    password = settings.secret(smtp.password_env, env)
    if smtp.password_env and password is None:
        raise ConfigError(
            f"environment variable {smtp.password_env} is not set", key="smtp.password_env"
        )
    from newsletter.delivery.smtp import SmtpSender  # smtp builds on this module's interface

    return SmtpSender(smtp, password=password)


__all__ = [
    "OutgoingMessage",
    "PreviewSender",
    "Receipt",
    "Sender",
    "SmtpThrottledError",
    "SmtpUnavailableError",
    "backoff_seconds",
    "make_sender",
    "nothing_before_data",
]
