"""Web: the Flask app readers reach from their email (unsubscribe, preferences).

``app`` builds it (:func:`create_app`, once per process, settings passed in), ``routes``
holds the blueprints, ``context`` what the requests share. A face like the CLI: may
import every stage and ``pipeline``; nothing imports it.
"""

from __future__ import annotations

from newsletter.web.app import create_app, create_wsgi_app
from newsletter.web.routes import mask_email

__all__ = ["create_app", "create_wsgi_app", "mask_email"]
