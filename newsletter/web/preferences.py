"""Editable preferences: the subscriber changes their own YAML file from the web.

Only files under the self-service folder are the web's to edit, unless ``[subscribe]
edit_operator_files`` is on: then an operator-written file is edited in place through
:mod:`newsletter.profiles.roundtrip`, so its comments and layout stay; off (the
default), such a profile is read-only here and a POST is refused. Before saving, the
page lists what the edited profile would have sent over the last seven days from the
stored entries, so a change is judged by its effect. Saving rewrites the file
atomically and syncs that file at once; two saves at the same moment leave one of them
whole, never a mix.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, render_template, request, url_for

from newsletter.db import session_scope
from newsletter.db.candidates import load_candidates
from newsletter.db.suppressions import LinkTarget, get_suppression
from newsletter.domain import Match
from newsletter.matching import Matcher
from newsletter.models import Subscriber
from newsletter.profiles import WEEKDAYS, parse_profiles
from newsletter.profiles.roundtrip import find_profile, update_profile
from newsletter.profiles.writer import (
    KEYWORD_SYNTAX,
    check_text,
    is_self_service,
    keyword_line,
    write_atomic,
)
from newsletter.web.context import web_context
from newsletter.web.digests import recent_digests
from newsletter.web.routes import invalid_link, keyword_rows, links, mask_email, resolve_link
from newsletter.web.selfservice import document_from, form_values, sync_now, validate

log = logging.getLogger(__name__)

prefs = Blueprint("prefs", __name__)

PREVIEW_DAYS = 7


def source_file(subscriber_id: int) -> str | None:
    with session_scope(web_context().engine) as session:
        sub = session.get(Subscriber, subscriber_id)
        return sub.source_file if sub is not None else None


# The keys the form edits; an operator file's other keys are never touched.
FORM_KEYS = ("name", "keywords", "exclude", "max_items", "frequency", "weekday", "send_time",
             "timezone")  # fmt: skip


def editable_path(subscriber_id: int) -> Path | None:
    """The subscriber's profile file when the web may edit it, else None: the web's own
    files, and with ``[subscribe] edit_operator_files`` the operator's too."""
    settings = web_context().settings
    source = source_file(subscriber_id)
    if source is None:
        return None
    if not settings.subscribe.edit_operator_files and not is_self_service(
        settings.newsletter.subscribers_dir, settings.subscribe.folder, source
    ):
        return None
    path = settings.newsletter.subscribers_dir / source
    return path if path.is_file() else None


def is_operator_file(path: Path) -> bool:
    """Whether ``path`` is outside the self-service folder (so edited in place)."""
    settings = web_context().settings
    subscribers_dir = settings.newsletter.subscribers_dir
    source = path.relative_to(subscribers_dir).as_posix()
    return not is_self_service(subscribers_dir, settings.subscribe.folder, source)


def values_of_file(path: Path, email: str) -> dict[str, str]:
    """The form's values for the subscriber's profile in a file (an operator's file may
    hold several)."""
    text = path.read_text(encoding="utf-8")
    data: Any = find_profile(text, email) if is_operator_file(path) else None
    if data is None:
        data = yaml.safe_load(text) or {}
        if isinstance(data, list):
            data = data[0] if data else {}
    n = web_context().settings.newsletter
    return {
        "email": str(data.get("email", "")),
        "name": str(data.get("name") or ""),
        "keywords": "\n".join(keyword_line(k) for k in data.get("keywords") or []),
        "exclude": "\n".join(keyword_line(k) for k in data.get("exclude") or []),
        "frequency": str(data.get("frequency") or "daily"),
        "weekday": _weekday(data.get("weekday")),
        "send_time": str(data.get("send_time") or n.send_time),
        "timezone": str(data.get("timezone") or n.timezone),
        "max_items": str(data.get("max_items") or ""),
    }


def _weekday(value: object) -> str:
    if isinstance(value, int) and 0 <= value <= 6:
        return WEEKDAYS[value]
    return str(value).lower() if value else WEEKDAYS[0]


def would_have_sent(text: str, *, source: str, now: datetime) -> list[Match]:
    """What a profile would have sent over the last :data:`PREVIEW_DAYS` days: per UTC
    day (daily) or in all (weekly) the best ``max_items`` matches, newest day first."""
    profiles, _, _ = parse_profiles(text, source=source)
    if not profiles:
        return []
    profile = profiles[0]
    with session_scope(web_context().engine) as session:
        articles = load_candidates(session, since=now - timedelta(days=PREVIEW_DAYS), until=now)
    if not articles:
        return []
    ranked = Matcher(articles).match(profile)
    cap = profile.max_items or web_context().settings.newsletter.max_items
    if profile.frequency == "weekly":
        return ranked[:cap]
    by_day: dict[str, list[Match]] = defaultdict(list)
    for m in ranked:
        day = m.article.first_seen.astimezone(UTC).date().isoformat()
        if len(by_day[day]) < cap:
            by_day[day].append(m)
    return [m for day in sorted(by_day, reverse=True) for m in by_day[day]]


def edit_page(
    target: LinkTarget,
    token: str,
    values: dict[str, str],
    *,
    problems: dict[str, tuple[str, ...]] | None = None,
    preview: list[Match] | None = None,
    saved: bool = False,
    unsubscribed: bool = False,
    status: int = 200,
) -> Any:
    return (
        render_template(
            "web/preferences_edit.html",
            token=token,
            email=mask_email(target.email),
            values=values,
            problems=problems or {},
            preview=preview,
            preview_days=PREVIEW_DAYS,
            saved=saved,
            unsubscribed=unsubscribed,
            weekdays=WEEKDAYS,
            syntax=KEYWORD_SYNTAX,
            unsubscribe_url=url_for("links.unsubscribe_page", token=token),
            digests=recent_digests(target),
        ),
        status,
    )


@links.get("/preferences/<token>")
def preferences(token: str) -> Any:
    """The subscriber's profile: a form for the web's own files, read-only otherwise."""
    with session_scope(web_context().engine) as session:
        target, why = resolve_link(session, token)
        current = get_suppression(session, target.email) if target else None
    if target is None:
        return invalid_link(why)
    path = editable_path(target.id)
    if path is not None:
        return edit_page(
            target, token, values_of_file(path, target.email), unsubscribed=current is not None
        )
    n = web_context().settings.newsletter
    return render_template(
        "web/preferences.html",
        email=mask_email(target.email),
        name=target.name,
        keywords=keyword_rows(target.profile, "keywords"),
        exclude=keyword_rows(target.profile, "exclude"),
        frequency=target.frequency,
        send_time=target.send_time or n.send_time,
        timezone=target.timezone or n.timezone,
        unsubscribed=current is not None,
        unsubscribe_url=url_for("links.unsubscribe_page", token=token),
        digests=recent_digests(target),
    )


@prefs.post("/preferences/<token>")
def save(token: str) -> Any:
    with session_scope(web_context().engine) as session:
        target, why = resolve_link(session, token)
    if target is None:
        return invalid_link(why)
    path = editable_path(target.id)
    if path is None:
        log.info("preferences: edit refused, the profile is the operator's")
        body = render_template(
            "web/error.html",
            title="Kept by the list operator",
            message="This profile is kept by the list operator: reply to a digest to change it.",
        )
        return body, 403
    values = form_values(request.form)
    values["email"] = target.email  # never from the form: the link names the subscriber
    source = path.relative_to(web_context().settings.newsletter.subscribers_dir).as_posix()
    document = document_from(values)
    text, problems = validate(document, source=source)
    if not problems.ok:
        return edit_page(target, token, values, problems=dict(problems.by_field), status=400)
    preview = would_have_sent(text, source=source, now=datetime.now(UTC))
    if request.form.get("action") != "save":
        return edit_page(target, token, values, preview=preview)
    if is_operator_file(path):
        # The operator's file: only this profile's form keys change, comments stay.
        text = update_profile(
            path.read_text(encoding="utf-8"),
            target.email,
            document,
            source=source,
            managed=FORM_KEYS,
        )
        problems = check_text(text, source=source)
        if not problems.ok:
            return edit_page(target, token, values, problems=dict(problems.by_field), status=400)
    write_atomic(path, text)
    sync_now(path)
    log.info("preferences: subscriber %d saved their profile", target.id)
    return edit_page(target, token, values_of_file(path, target.email), preview=preview, saved=True)
