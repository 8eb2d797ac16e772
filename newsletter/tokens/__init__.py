"""Signed links: unsubscribe, preferences, feedback and View-in-browser tokens
(:mod:`.links`), double opt-in confirmations (:mod:`.confirm`), their URLs (:mod:`.urls`),
and the signing key (here).

The key comes from the environment variable named by ``[newsletter] secret_key_env``
(see :func:`secret_from_settings`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.tokens.confirm import make_confirm_token, read_confirm_token
from newsletter.tokens.links import (
    FORMAT,
    DigestLinkData,
    FeedbackData,
    FeedbackDirection,
    TokenData,
    check_form_key,
    feedback_tokens,
    form_key,
    make_digest_token,
    make_feedback_token,
    make_token,
    read_digest_token,
    read_feedback_token,
    read_token,
)
from newsletter.tokens.urls import (
    confirm_url,
    digest_view_url,
    feedback_url,
    preferences_url,
    unsubscribe_url,
)

__all__ = [
    "FORMAT",
    "MIN_SECRET_CHARS",
    "DigestLinkData",
    "FeedbackData",
    "FeedbackDirection",
    "TokenData",
    "check_form_key",
    "confirm_url",
    "development_secret",
    "digest_view_url",
    "feedback_tokens",
    "feedback_url",
    "form_key",
    "make_confirm_token",
    "make_digest_token",
    "make_feedback_token",
    "make_token",
    "preferences_url",
    "read_confirm_token",
    "read_digest_token",
    "read_feedback_token",
    "read_token",
    "secret_from_settings",
    "unsubscribe_url",
]

log = logging.getLogger(__name__)
_warned: set[str] = set()
MIN_SECRET_CHARS = 16
_DEV_KEY_LABEL = b"newsletter insecure development key, preview only:"


def development_secret(list_id: str) -> bytes:
    """The public key used in preview mode when no secret is set (never for real mail)."""
    return hashlib.sha256(_DEV_KEY_LABEL + list_id.encode("utf-8")).digest()


def secret_from_settings(
    settings: Settings,
    *,
    require: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> bytes:
    """The signing key, from the variable named by ``[newsletter] secret_key_env``.

    When the variable is unset: with ``delivery = "preview"`` (and ``require`` not
    true) a public development key is used, with a warning, so the offline demo works
    end to end (``preview`` and ``serve`` derive the same key). Otherwise — real mail
    (``delivery = "smtp"``), or a caller that insists (``require=True``, e.g. the
    production WSGI entry point) — it is a :class:`ConfigError`: links signed with a
    public key could be forged by anyone.
    """
    n = settings.newsletter
    name = n.secret_key_env
    value = (os.environ if env is None else env).get(name, "") if name else ""
    if value:
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"the secret key is too short ({len(value)} characters; use at least "
                f"{MIN_SECRET_CHARS}, e.g. from: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')",
                path="environment",
                key=name,
            )
        return value.encode("utf-8")
    must = require if require is not None else n.delivery != "preview"
    if must:
        raise ConfigError(
            "not set: it holds the key that signs unsubscribe links; set it to a long random "
            "value, e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))' "
            "(the name comes from [newsletter] secret_key_env)",
            path="environment",
            key=name or "newsletter.secret_key_env",
        )
    if name not in _warned:  # once per process, however many stages ask for the key
        _warned.add(name)
        log.warning(
            "%s is not set: unsubscribe links use a public development key "
            "(fine for previews, never for real mail)",
            name or "the secret key variable",
        )
    return development_secret(n.list_id)
