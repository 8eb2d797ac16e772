"""What every request of the web app shares: settings, engine and signing secret.

Built once by :func:`newsletter.web.app.create_app` and kept on the app
(``app.extensions``), so blueprints reach it through ``current_app`` instead of closures.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.web.ratelimit import RateLimiter

ONE_CLICK_KEY = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
EXTENSION = "newsletter"


@dataclass(frozen=True, slots=True)
class Limits:
    """The subscribe form's rate limits (per client address, per email address)."""

    client: RateLimiter
    address: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, secret: bytes) -> Limits:
        s = settings.subscribe
        return cls(
            RateLimiter(engine, "client", s.per_client_per_hour, secret=secret),
            RateLimiter(engine, "address", s.per_address_per_hour, secret=secret),
        )


@dataclass(frozen=True, slots=True)
class WebContext:
    settings: Settings
    engine: Engine
    secret: bytes
    limits: Limits


def web_context() -> WebContext:
    """The context of the app handling the current request."""
    ctx: WebContext = current_app.extensions[EXTENSION]
    return ctx
