"""The product's link URLs: one place that knows each route's path."""

from __future__ import annotations


def _join(base_url: str, path: str) -> str:
    return f"{base_url.rstrip('/')}/{path}"


def unsubscribe_url(base_url: str, token: str) -> str:
    """The link for the email footer and ``List-Unsubscribe`` (GET page, one-click POST)."""
    return _join(base_url, f"unsubscribe/{token}")


def preferences_url(base_url: str, token: str) -> str:
    """The read-only page that shows the subscriber's keywords."""
    return _join(base_url, f"preferences/{token}")


def confirm_url(base_url: str, token: str) -> str:
    """The double opt-in link of the confirmation email (GET page, POST confirms)."""
    return _join(base_url, f"subscribe/confirm/{token}")


def digest_view_url(base_url: str, token: str) -> str:
    """A sent digest's "View in browser" link (its kept copy)."""
    return _join(base_url, f"d/{token}")


def feedback_url(base_url: str, token: str) -> str:
    """A card's "More/Fewer like this" link (GET page, POST applies)."""
    return _join(base_url, f"feedback/{token}")
