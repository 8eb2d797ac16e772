"""The web app's factory (Flask): settings in, an app with its blueprints out.

Routes, all keyed by the opaque token of :mod:`newsletter.tokens`:

* ``POST /unsubscribe/<token>`` with ``List-Unsubscribe=One-Click`` (what Gmail and
  Yahoo send): unsubscribes at once, answers ``200`` in plain text.
* ``GET /unsubscribe/<token>``: a page with a button. A GET never changes anything,
  because link scanners (Outlook Safe Links and others) fetch every link in a mail.
* ``POST /unsubscribe/<token>`` from that page: unsubscribes and confirms, with undo.
* ``POST /resubscribe/<token>``: the undo.
* ``GET/POST /preferences/<token>``: the subscriber's profile, editable when the web
  wrote it (:mod:`newsletter.web.preferences`), read-only otherwise.
* ``GET/POST /subscribe``, ``GET/POST /subscribe/confirm/<token>``: double opt-in
  (:mod:`newsletter.web.subscribe`).
* ``GET/POST /feedback/<token>``, ``POST /feedback/undo/<token>/<id>``: More/Fewer like
  this from a card, and its Undo (:mod:`newsletter.web.feedback`).
* ``GET /healthz``: the database answers.
* ``GET /metrics``: Prometheus metrics from the database (:mod:`newsletter.web.metrics`).

A bad, tampered or revoked token, or a subscriber whose profile was deleted, gets a
friendly 400 and changes nothing. No cookies and no sessions: the token is the
capability (RFC 8058 forbids requiring any other context).

Routes live in blueprints (:mod:`newsletter.web.routes`). Production:
``gunicorn 'newsletter.web:create_wsgi_app()'`` (see ``deploy/web.md``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, Response, render_template, request
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response as WerkzeugResponse

from newsletter.config import Settings, bundled_dir, check_base_url_for_smtp, load_settings
from newsletter.db import connect, current_revision, head_revision
from newsletter.errors import DatabaseError
from newsletter.pipeline.logs import FORMAT_ENV, configure
from newsletter.tokens import secret_from_settings
from newsletter.web.context import EXTENSION, Limits, WebContext, web_context
from newsletter.web.digests import digests
from newsletter.web.feedback import feedback
from newsletter.web.logsafe import guard
from newsletter.web.metrics import metrics
from newsletter.web.preferences import prefs
from newsletter.web.routes import is_one_click, links, request_label, site
from newsletter.web.subscribe import subscribe

log = guard(logging.getLogger(__name__))

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _template_loader(settings: Settings) -> BaseLoader:
    """The operator's ``templates_dir`` first, then the bundled templates."""
    dirs = [settings.newsletter.templates_dir] if settings.newsletter.templates_dir else []
    dirs.append(bundled_dir("templates"))
    return ChoiceLoader([FileSystemLoader(str(d)) for d in dirs])


def _globals() -> dict[str, Any]:
    return {"list_name": web_context().settings.newsletter.list_name}


def _headers(resp: Response) -> Response:
    # Tokens are in URLs: never leak them in a Referer, a cache or a search index.
    resp.headers.setdefault("Content-Security-Policy", _CSP)
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Robots-Tag"] = "noindex, nofollow"
    if "Cache-Control" not in resp.headers:
        resp.headers["Cache-Control"] = "no-store"
    return resp


def _db_down(e: Exception) -> tuple[str | Response, int, dict[str, str]]:
    # 503 + Retry-After: mail providers retry a one-click POST later.
    log.error("database error on %s: %s", request_label(), e)
    retry = {"Retry-After": "120"}
    if request.method == "POST" and is_one_click():
        return Response("temporarily unavailable\n", mimetype="text/plain"), 503, retry
    body = render_template(
        "web/error.html",
        title="Please try again later",
        message="We could not record your request just now. Nothing was changed.",
    )
    return body, 503, retry


def _http_error(e: HTTPException) -> WerkzeugResponse:
    # Start from werkzeug's own response so its headers (Allow on a 405, Retry-After...)
    # survive; only the body is ours.
    code = e.code or 500
    resp = e.get_response()
    resp.set_data(
        render_template(
            "web/error.html", title=f"{code} {e.name}", message="There is nothing here."
        )
    )
    resp.content_type = "text/html; charset=utf-8"
    return resp


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    testing: bool = False,
    secret: bytes | None = None,
) -> Flask:
    """Build the app; ``engine`` and ``secret`` default to what ``settings`` names.

    The secret follows :func:`newsletter.tokens.secret_from_settings`: required when
    mail really goes out, a development key in preview mode, so that links in preview
    emails work against ``newsletter serve`` on a laptop.
    """
    app = Flask(__name__, static_folder=None, template_folder=None)
    app.jinja_loader = _template_loader(settings)
    app.config.update(TESTING=testing, MAX_CONTENT_LENGTH=16 * 1024)
    engine = engine if engine is not None else connect(settings.database.url)
    secret = secret if secret is not None else secret_from_settings(settings)
    app.extensions[EXTENSION] = WebContext(
        settings=settings,
        engine=engine,
        secret=secret,
        limits=Limits.from_settings(settings, engine, secret),
    )
    # No "//" -> "/" redirect: werkzeug would build its Location from the client's Host
    # header (an open redirect carrying a token). A doubled slash is a 404 instead.
    app.url_map.merge_slashes = False
    app.register_blueprint(links)
    app.register_blueprint(site)
    app.register_blueprint(subscribe)
    app.register_blueprint(prefs)
    app.register_blueprint(feedback)
    app.register_blueprint(digests)
    app.register_blueprint(metrics)
    app.context_processor(_globals)
    app.after_request(_headers)
    app.register_error_handler(SQLAlchemyError, _db_down)
    app.register_error_handler(DatabaseError, _db_down)
    app.register_error_handler(HTTPException, _http_error)
    return app


def create_wsgi_app(config: str | None = None, *, proxies: int = 0) -> Any:
    """The production entry point: ``gunicorn 'newsletter.web:create_wsgi_app()'``.

    Settings come from ``config`` or ``NEWSLETTER_CONFIG``; the secret key must be set
    (no development key in production) and the schema up to date. Behind ``proxies``
    trusted reverse proxies, ``X-Forwarded-For/-Proto/-Host/-Prefix`` are honoured
    (werkzeug's ProxyFix): client addresses are logged right and a path prefix such as
    ``/newsletter`` works.
    """
    # gunicorn leaves the root logger bare: without this the unsubscribe lines are lost.
    configure(logging.INFO, "json" if os.environ.get(FORMAT_ENV) == "json" else "text")
    settings = load_settings(config)
    secret = secret_from_settings(settings, require=True)
    check_base_url_for_smtp(settings)  # confirmation mails carry base_url links
    # Workers never migrate: several booting at once would race. The operator upgrades.
    engine = connect(settings.database.url, echo=settings.database.echo, migrate=False)
    current, head = current_revision(engine), head_revision()
    if current != head:
        engine.dispose()
        raise DatabaseError(
            f"the database schema is at {current or 'nothing'}, this version needs {head}: "
            "run `newsletter db upgrade` first"
        )
    app = create_app(settings, engine, secret=secret)
    if proxies > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_prefix=proxies
        )
    return app
