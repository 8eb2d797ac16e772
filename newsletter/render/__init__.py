"""Render: matches and a subscriber in; subject, HTML, plain text and MIME bytes out.

Pure: no database, no network. ``renderer`` is the one entry point (:class:`Renderer`),
``email`` its request and result types; ``views`` (with ``labels``) turns matches into
what a reader sees, ``cards`` builds each card's values, ``templates`` loads the Jinja2
files and inlines CSS with premailer, ``shapes`` is the compiled-shape fast path (each
template's inlined HTML compiled once, then filled per email), ``headers``, ``qp`` and
``mime`` make the message bytes. May import ``config``, ``domain`` and ``errors``.
"""

from __future__ import annotations

from newsletter.render.email import DigestRequest, RenderedEmail
from newsletter.render.renderer import Renderer

__all__ = ["DigestRequest", "RenderedEmail", "Renderer"]
