"""newsletter: a self-hosted, personalised research digest mailer."""

from __future__ import annotations

__version__ = "0.1.0"
