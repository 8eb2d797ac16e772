"""One exception hierarchy, so the CLI can turn any of them into one clear line.

Every subclass carries the context an operator needs to act (a file and line, a feed
URL, a subscriber); third-party errors are wrapped with ``raise ... from e``.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base class of every error the core raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(NewsletterError):
    """A configuration file or environment variable is missing or wrong."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = ": ".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class DatabaseError(NewsletterError):
    """The database cannot be reached, migrated or written."""


class FeedError(NewsletterError):
    """One feed could not be fetched or parsed; the run goes on without it."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: {message}")


class ProfileError(NewsletterError):
    """A subscriber profile is invalid: ``file:line: field: what is wrong``."""

    def __init__(
        self, message: str, *, path: str, line: int | None = None, field: str | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.detail = message
        loc = f"{path}:{line}" if line is not None else path
        super().__init__(f"{loc}: {field}: {message}" if field else f"{loc}: {message}")


class RenderError(NewsletterError):
    """A template is missing or failed to render."""


class DeliveryError(NewsletterError):
    """A message could not be delivered.

    ``permanent`` separates a 5xx for the recipient (mark failed, go on) from a
    temporary fault (retry with backoff).
    """

    def __init__(
        self,
        message: str,
        *,
        recipient: str | None = None,
        code: int | None = None,
        permanent: bool = False,
    ) -> None:
        self.recipient = recipient
        self.code = code
        self.permanent = permanent
        prefix = f"{recipient}: " if recipient else ""
        suffix = f" (SMTP {code})" if code else ""
        super().__init__(f"{prefix}{message}{suffix}")


class TokenError(NewsletterError):
    """An unsubscribe token is malformed, tampered with or revoked."""


class SyncRefused(NewsletterError):
    """A sync would deactivate everybody, or more than the allowed share, at once.

    That is what an unmounted volume or a wrong ``subscribers_dir`` looks like; nothing
    is changed until the operator confirms with ``--allow-mass-deactivation``.
    """
