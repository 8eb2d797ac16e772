"""The link routes of the web app: unsubscribe (RFC 8058), undo, preferences.

Every route is keyed by the opaque token of :mod:`newsletter.tokens`; a bad, tampered or
revoked token, or a subscriber whose profile was deleted, gets a friendly 400 and
changes nothing. A GET never changes anything, because link scanners (Outlook Safe
Links and others) fetch every link in a mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from flask import Blueprint, Response, render_template, request, url_for
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.db import session_scope
from newsletter.db.suppressions import (
    SELF_SERVICE,
    LinkTarget,
    Source,
    get_suppression,
    link_target,
    suppress,
    unsuppress,
)
from newsletter.errors import TokenError
from newsletter.tokens import check_form_key, form_key, read_token
from newsletter.web.context import ONE_CLICK_KEY, ONE_CLICK_VALUE, web_context
from newsletter.web.logsafe import guard, token_id

log = guard(logging.getLogger(__name__))

links = Blueprint("links", __name__)  # everything a link in an email leads to
site = Blueprint("site", __name__)  # the rest: the style sheet, the health check


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


def is_one_click() -> bool:
    return request.form.get(ONE_CLICK_KEY) == ONE_CLICK_VALUE


def request_label() -> str:
    """``POST /unsubscribe/<token> token=1a2b3c4d``: the route, never the path itself."""
    rule = request.url_rule.rule if request.url_rule is not None else "(no route)"
    token = (request.view_args or {}).get("token")
    return f"{request.method} {rule}" + (f" token={token_id(token)}" if token else "")


def _invalid(reason: str, *, plain: bool = False) -> tuple[str | Response, int]:
    log.info("rejected link: %s (%s)", reason, request_label())
    if plain:
        return Response("invalid or expired unsubscribe link\n", mimetype="text/plain"), 400
    return render_template("web/invalid.html"), 400


def row_salts(
    session: Session,
) -> tuple[Callable[[int], str | None], dict[int, LinkTarget | None]]:
    """A ``salt_of`` for the token readers, and the rows it looked up (by id)."""
    seen: dict[int, LinkTarget | None] = {}

    def salt_of(subscriber_id: int) -> str | None:
        # A forged token opens to a random u64: past the id column's range (32-bit on
        # PostgreSQL) it names no row, and asking the database would be an error.
        if not 0 < subscriber_id < 2**31:
            seen[subscriber_id] = None
            return None
        seen[subscriber_id] = target = link_target(session, subscriber_id)
        return target.token_salt if target is not None else None

    return salt_of, seen


def _resolve(session: Session, token: str) -> tuple[LinkTarget | None, str]:
    """The subscriber a token names, or None and why not."""
    salt_of, seen = row_salts(session)
    try:
        data = read_token(
            web_context().secret,
            token,
            list_id=web_context().settings.newsletter.list_id,
            salt_of=salt_of,
        )
    except TokenError as e:
        # A missing row and a wrong salt look alike: the id of an unsigned token is noise.
        return None, str(e)
    target = seen[data.subscriber_id]
    if target is None:  # not reached: read_token refuses a token with no row to check
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
        unsubscribe_key=form_key(web_context().secret, token, "unsubscribe"),
        resubscribe_key=form_key(web_context().secret, token, "resubscribe"),
        preferences_url=url_for("links.preferences", token=token),
        **extra,
    )


@links.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> Any:
    with session_scope(web_context().engine) as session:
        target, why = _resolve(session, token)
        current = get_suppression(session, target.email) if target else None
    if target is None:
        return _invalid(why)
    if current is None:
        return _page(target, token, "subscribed")
    return _page(
        target, token, "unsubscribed", can_undo=current.source in SELF_SERVICE, fresh=False
    )


@links.post("/unsubscribe/<token>")
def unsubscribe(token: str) -> Any:
    one_click = is_one_click()
    if one_click:
        source: Source = "one-click"
    elif check_form_key(
        web_context().secret, token, "unsubscribe", request.form.get("form_key", "")
    ):
        source = "page"
    else:
        # Neither a provider's one-click body nor our own form: change nothing.
        return _invalid("POST without List-Unsubscribe=One-Click or a valid form key")
    with session_scope(web_context().engine) as session:
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


@links.post("/resubscribe/<token>")
def resubscribe(token: str) -> Any:
    if not check_form_key(
        web_context().secret, token, "resubscribe", request.form.get("form_key", "")
    ):
        return _invalid("re-subscribe without a valid form key")
    with session_scope(web_context().engine) as session:
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
        preferences_url=url_for("links.preferences", token=token),
    )


@site.get("/style.css")
def style() -> Response:
    resp = Response(render_template("web/style.css"), mimetype="text/css")
    resp.headers["Cache-Control"] = "public, max-age=3600"
    return resp


@site.get("/healthz")
def healthz() -> Response:
    try:
        with web_context().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        log.error("health check failed: %s", e)
        return Response("database unavailable\n", status=503, mimetype="text/plain")
    return Response("ok\n", mimetype="text/plain")


# For the self-service modules, which answer links the same way.
resolve_link = _resolve
invalid_link = _invalid
keyword_rows = _keywords
