"""Subscribing with double opt-in: the form, the confirmation mail, the confirm link.

Nothing is stored before the click: the confirmation link carries the whole pending
profile, signed and expiring (:func:`newsletter.tokens.make_confirm_token`). Every
valid submission gets the same page whether or not the address is already on the list
(no enumeration): a new address gets the confirmation link, a known one a mail with
its preferences link. The confirm link's GET only shows a button (link scanners fetch
every link); its POST writes the YAML file under the self-service folder and syncs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for

from newsletter.errors import DeliveryError, TokenError
from newsletter.profiles import WEEKDAYS
from newsletter.profiles.writer import KEYWORD_SYNTAX, file_name, write_atomic
from newsletter.tokens import confirm_url, make_confirm_token, preferences_url, read_confirm_token
from newsletter.web.context import Limits, web_context
from newsletter.web.routes import mask_email
from newsletter.web.selfservice import (
    document_from,
    form_values,
    link_token,
    self_service_folder,
    send_mail,
    subscriber_by_email,
    sync_now,
    validate,
)

log = logging.getLogger(__name__)

subscribe = Blueprint("subscribe", __name__)

HONEYPOT = "website"  # hidden from people by CSS; bots fill every field


def _limits() -> Limits:
    return web_context().limits


def _form(values: dict[str, str], problems: dict[str, tuple[str, ...]], status: int = 200) -> Any:
    return (
        render_template(
            "web/subscribe.html",
            values=values,
            problems=problems,
            weekdays=WEEKDAYS,
            syntax=KEYWORD_SYNTAX,
            honeypot=HONEYPOT,
        ),
        status,
    )


def _closed() -> Any:
    return render_template("web/subscribe_closed.html"), 403


@subscribe.get("/subscribe.js")
def script() -> Response:
    """Prefills the timezone from the browser; the form works without it."""
    resp = Response(render_template("web/subscribe.js"), mimetype="text/javascript")
    resp.headers["Cache-Control"] = "public, max-age=3600"
    return resp


@subscribe.get("/subscribe")
def subscribe_page() -> Any:
    if not web_context().settings.subscribe.enabled:
        return _closed()
    return _form(form_values({}), {})


@subscribe.post("/subscribe")
def subscribe_post() -> Any:
    ctx = web_context()
    if not ctx.settings.subscribe.enabled:
        return _closed()
    if not _limits().client.hit(request.remote_addr or "unknown"):
        log.info("subscribe: client rate limit reached")
        return render_template("web/subscribe_limited.html"), 429
    values = form_values(request.form)
    if request.form.get(HONEYPOT):
        log.info("subscribe: honeypot filled, nothing sent")
        return render_template("web/subscribe_sent.html")
    document = document_from(values)
    _, problems = validate(document, source="subscribe form")
    if not problems.ok:
        return _form(values, dict(problems.by_field), 400)
    email = str(document["email"])
    if not _limits().address.hit(email):
        # The same page as a sent mail: the limit must not tell who is subscribed.
        log.info("subscribe: per-address rate limit reached")
        return render_template("web/subscribe_sent.html")
    n = ctx.settings.newsletter
    try:
        existing = subscriber_by_email(email)
        if existing is not None:
            send_mail(
                email,
                "web/email/already_subscribed.txt",
                f"You are already subscribed to {n.list_name}",
                preferences_url=preferences_url(n.base_url, link_token(existing)),
            )
        else:
            hours = ctx.settings.subscribe.confirm_hours
            token = make_confirm_token(
                ctx.secret,
                list_id=n.list_id,
                payload=document,
                expires_at=int(time.time()) + hours * 3600,
            )
            send_mail(
                email,
                "web/email/confirm.txt",
                f"Confirm your subscription to {n.list_name}",
                confirm_url=confirm_url(n.base_url, token),
                hours=hours,
                keywords=document.get("keywords", []),
            )
    except (DeliveryError, TokenError) as e:
        log.error("subscribe: could not send the mail: %s", e)
        body = render_template(
            "web/error.html",
            title="Please try again later",
            message="We could not send the confirmation email just now. Nothing was changed.",
        )
        return body, 503
    return render_template("web/subscribe_sent.html")


def _pending(token: str) -> tuple[dict[str, Any] | None, str]:
    ctx = web_context()
    try:
        payload = read_confirm_token(
            ctx.secret, token, list_id=ctx.settings.newsletter.list_id, now=int(time.time())
        )
    except TokenError as e:
        return None, str(e)
    return payload, ""


def _bad_link(why: str) -> Any:
    log.info("rejected confirmation link: %s", why)
    return render_template("web/confirm_invalid.html", expired=why.startswith("expired")), 400


@subscribe.get("/subscribe/confirm/<token>")
def confirm_page(token: str) -> Any:
    payload, why = _pending(token)
    if payload is None:
        return _bad_link(why)
    return render_template(
        "web/confirm.html",
        email=mask_email(str(payload.get("email", ""))),
        token=token,
        keywords=payload.get("keywords", []),
    )


@subscribe.post("/subscribe/confirm/<token>")
def confirm(token: str) -> Any:
    payload, why = _pending(token)
    if payload is None:
        return _bad_link(why)
    email = str(payload.get("email", ""))
    folder = self_service_folder()
    path = folder / file_name(email)
    if subscriber_by_email(email) is None:
        source = path.relative_to(web_context().settings.newsletter.subscribers_dir).as_posix()
        text, problems = validate(payload, source=source)
        if not problems.ok:
            return _bad_link("the pending profile no longer validates")
        if write_atomic(path, text, create_only=True):
            log.info("subscribe: self-service profile written")
        sync_now(path)
    sub = subscriber_by_email(email)
    if sub is None:
        # Written but not synced (held by a duplicate elsewhere): the operator must look.
        log.warning("subscribe: confirmed profile did not sync; see `subscribers check`")
        body = render_template(
            "web/error.html",
            title="Almost there",
            message="Your subscription is recorded and waits for the list operator.",
        )
        return body, 202
    return render_template(
        "web/confirmed.html",
        email=mask_email(email),
        preferences_url=url_for("links.preferences", token=link_token(sub)),
    )
