"""The unsubscribe web app (Flask): RFC 8058 one-click, a confirmation page, undo.

Routes, all keyed by the opaque token of :mod:`newsletter.tokens`:

* ``POST /unsubscribe/<token>`` with ``List-Unsubscribe=One-Click`` (what Gmail and
  Yahoo send): unsubscribes at once, answers ``200`` in plain text.
* ``GET /unsubscribe/<token>``: a page with a button. A GET never changes anything,
  because link scanners (Outlook Safe Links and others) fetch every link in a mail.
* ``POST /unsubscribe/<token>`` from that page: unsubscribes and confirms, with undo.
* ``POST /resubscribe/<token>``: the undo.
* ``GET /preferences/<token>``: the subscriber's keywords, read-only.
* ``GET /healthz``: the database answers.

A bad, tampered or revoked token, or a subscriber whose profile was deleted, gets a
friendly 400 and changes nothing. No cookies and no sessions: the token is the
capability (RFC 8058 forbids requiring any other context).

Production: ``gunicorn 'newsletter.web:create_wsgi_app()'`` (see ``deploy/web.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from flask import Flask, Response, render_template, request, url_for
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from newsletter.config import Settings, bundled_dir, load_settings
from newsletter.db import connect, current_revision, head_revision, session_scope
from newsletter.db.suppressions import (
    SELF_SERVICE,
    LinkTarget,
    Source,
    get_suppression,
    link_target,
    suppress,
    unsuppress,
)
from newsletter.errors import DatabaseError, TokenError
from newsletter.tokens import check_form_key, form_key, read_token, secret_from_settings

log = logging.getLogger(__name__)

ONE_CLICK_KEY = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class _Ctx:
    settings: Settings
    engine: Engine
    secret: bytes


def mask_email(email: str) -> str:
    """``ada@example.org`` -> ``a**@example.org``: enough to recognise, not to harvest."""
    local, at, domain = email.rpartition("@")
    if not at:
        return "***"
    shown = local[:1] if len(local) <= 3 else local[:2]
    return f"{shown}{'*' * max(len(local) - len(shown), 2)}@{domain}"


def _keywords(profile: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Keywords of a stored profile as display rows; tolerant of both YAML shapes."""
    rows: list[dict[str, Any]] = []
    for item in profile.get(key) or []:
        if isinstance(item, str):
            rows.append({"term": item, "weight": 1, "field": None, "exact": False})
        elif isinstance(item, dict) and item.get("term"):
            weight = item.get("weight", 1)
            if isinstance(weight, float) and weight.is_integer():
                weight = int(weight)
            rows.append(
                {
                    "term": str(item["term"]),
                    "weight": weight,
                    "field": item.get("field"),
                    "exact": bool(item.get("exact", False)),
                }
            )
    return rows


def _template_loader(settings: Settings) -> BaseLoader:
    """The operator's ``templates_dir`` first, then the bundled templates."""
    dirs = [settings.newsletter.templates_dir] if settings.newsletter.templates_dir else []
    dirs.append(bundled_dir("templates"))
    return ChoiceLoader([FileSystemLoader(str(d)) for d in dirs])


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
    ctx = _Ctx(
        settings=settings,
        engine=engine if engine is not None else connect(settings.database.url),
        secret=secret if secret is not None else secret_from_settings(settings),
    )
    list_id = settings.newsletter.list_id

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"list_name": settings.newsletter.list_name}

    @app.after_request
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

    def _is_one_click() -> bool:
        return request.form.get(ONE_CLICK_KEY) == ONE_CLICK_VALUE

    def _invalid(reason: str, *, plain: bool = False) -> tuple[str | Response, int]:
        log.info("rejected link: %s (%s %s)", reason, request.method, request.path)
        if plain:
            return Response("invalid or expired unsubscribe link\n", mimetype="text/plain"), 400
        return render_template("web/invalid.html"), 400

    def _resolve(session: Session, token: str) -> tuple[LinkTarget | None, str]:
        """The subscriber a token names, or None and why not."""
        try:
            data = read_token(ctx.secret, token, list_id=list_id)
        except TokenError as e:
            return None, str(e)
        target = link_target(session, data.subscriber_id)
        if target is None:
            return None, f"subscriber {data.subscriber_id} no longer exists"
        if target.deleted:
            return None, f"subscriber {target.id} was deleted"
        if data.version != target.token_version:
            return None, f"revoked link (version {data.version}) for subscriber {target.id}"
        return target, ""

    def _page(
        target: LinkTarget, token: str, state: Literal["subscribed", "unsubscribed"], **extra: Any
    ) -> str:
        return render_template(
            "web/unsubscribe.html",
            state=state,
            email=mask_email(target.email),
            token=token,
            unsubscribe_key=form_key(ctx.secret, token, "unsubscribe"),
            resubscribe_key=form_key(ctx.secret, token, "resubscribe"),
            preferences_url=url_for("preferences", token=token),
            **extra,
        )

    @app.get("/unsubscribe/<token>")
    def unsubscribe_page(token: str) -> Any:
        with session_scope(ctx.engine) as session:
            target, why = _resolve(session, token)
            current = get_suppression(session, target.email) if target else None
        if target is None:
            return _invalid(why)
        if current is None:
            return _page(target, token, "subscribed")
        return _page(
            target, token, "unsubscribed", can_undo=current.source in SELF_SERVICE, fresh=False
        )

    @app.post("/unsubscribe/<token>")
    def unsubscribe(token: str) -> Any:
        one_click = _is_one_click()
        if one_click:
            source: Source = "one-click"
        elif check_form_key(ctx.secret, token, "unsubscribe", request.form.get("form_key", "")):
            source = "page"
        else:
            # Neither a provider's one-click body nor our own form: change nothing.
            return _invalid("POST without List-Unsubscribe=One-Click or a valid form key")
        with session_scope(ctx.engine) as session:
            target, why = _resolve(session, token)
            if target is None:
                return _invalid(why, plain=one_click)
            added = suppress(session, email=target.email, subscriber_id=target.id, source=source)
            current = get_suppression(session, target.email)
        if added:
            log.info("subscriber %d unsubscribed (%s)", target.id, source)
        if one_click:
            return Response("unsubscribed\n", mimetype="text/plain")
        can_undo = current is not None and current.source in SELF_SERVICE
        return _page(target, token, "unsubscribed", can_undo=can_undo, fresh=True)

    @app.post("/resubscribe/<token>")
    def resubscribe(token: str) -> Any:
        if not check_form_key(ctx.secret, token, "resubscribe", request.form.get("form_key", "")):
            return _invalid("re-subscribe without a valid form key")
        with session_scope(ctx.engine) as session:
            target, why = _resolve(session, token)
            if target is None:
                return _invalid(why)
            removed = unsuppress(session, target.email, sources=SELF_SERVICE)
            left = get_suppression(session, target.email)
        if left is not None:
            # Suppressed by the operator: not the subscriber's to undo.
            return _page(target, token, "unsubscribed", can_undo=False, fresh=False, blocked=True)
        if removed:
            log.info("subscriber %d re-subscribed", target.id)
        return render_template(
            "web/resubscribed.html",
            email=mask_email(target.email),
            preferences_url=url_for("preferences", token=token),
        )

    @app.get("/preferences/<token>")
    def preferences(token: str) -> Any:
        with session_scope(ctx.engine) as session:
            target, why = _resolve(session, token)
            current = get_suppression(session, target.email) if target else None
        if target is None:
            return _invalid(why)
        n = settings.newsletter
        return render_template(
            "web/preferences.html",
            email=mask_email(target.email),
            name=target.name,
            keywords=_keywords(target.profile, "keywords"),
            exclude=_keywords(target.profile, "exclude"),
            frequency=target.frequency,
            send_time=target.send_time or n.send_time,
            timezone=target.timezone or n.timezone,
            unsubscribed=current is not None,
            unsubscribe_url=url_for("unsubscribe_page", token=token),
        )

    @app.get("/style.css")
    def style() -> Response:
        resp = Response(render_template("web/style.css"), mimetype="text/css")
        resp.headers["Cache-Control"] = "public, max-age=3600"
        return resp

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            with ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            log.error("health check failed: %s", e)
            return Response("database unavailable\n", status=503, mimetype="text/plain")
        return Response("ok\n", mimetype="text/plain")

    @app.errorhandler(SQLAlchemyError)
    @app.errorhandler(DatabaseError)
    def _db_down(e: Exception) -> tuple[str | Response, int, dict[str, str]]:
        # 503 + Retry-After: mail providers retry a one-click POST later.
        log.error("database error on %s %s: %s", request.method, request.path, e)
        retry = {"Retry-After": "120"}
        if request.method == "POST" and _is_one_click():
            return Response("temporarily unavailable\n", mimetype="text/plain"), 503, retry
        body = render_template(
            "web/error.html",
            title="Please try again later",
            message="We could not record your request just now. Nothing was changed.",
        )
        return body, 503, retry

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> tuple[str, int]:
        code = e.code or 500
        body = render_template(
            "web/error.html", title=f"{code} {e.name}", message="There is nothing here."
        )
        return body, code

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
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(config)
    secret = secret_from_settings(settings, require=True)
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
