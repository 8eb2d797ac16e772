""" "More like this" / "Fewer like this" from a card, with the change shown and Undo.

A card's link is signed for one subscriber, one entry and one direction
(:func:`newsletter.tokens.make_feedback_token`). Its GET only asks (link scanners fetch
every link); the POST applies :func:`newsletter.profiles.tuning.tune` to the
subscriber's YAML file, keeps the file's text before and after in ``profile_changes``,
syncs, and shows the lines that changed with an Undo. Undo writes the old bytes back,
but only while the file is still exactly what the change left.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from flask import Blueprint, render_template, url_for
from sqlalchemy import select

from newsletter.db import session_scope
from newsletter.db.entries import to_article
from newsletter.db.suppressions import LinkTarget
from newsletter.errors import TokenError
from newsletter.matching import Matcher
from newsletter.models import Entry, ProfileChange
from newsletter.profiles import normalise_email, parse_profiles
from newsletter.profiles.roundtrip import find_profile, update_profile
from newsletter.profiles.tuning import tune
from newsletter.profiles.writer import profile_document, profile_text, write_atomic
from newsletter.tokens import FeedbackData, read_feedback_token
from newsletter.web.context import web_context
from newsletter.web.preferences import editable_path, is_operator_file
from newsletter.web.routes import invalid_link, resolve_link, row_salts
from newsletter.web.selfservice import link_token, subscriber_by_email, sync_now

log = logging.getLogger(__name__)

feedback = Blueprint("feedback", __name__)

HISTORY_SHOWN = 10


def _resolve(token: str) -> tuple[LinkTarget | None, FeedbackData | None, str]:
    ctx = web_context()
    with session_scope(ctx.engine) as session:
        salt_of, seen = row_salts(session)
        try:
            data = read_feedback_token(
                ctx.secret, token, list_id=ctx.settings.newsletter.list_id, salt_of=salt_of
            )
        except TokenError as e:
            return None, None, str(e)
    target = seen.get(data.subscriber_id)
    if target is None or target.deleted:
        return None, None, "subscriber gone"
    if data.version != target.token_version:
        return None, None, "revoked link"
    return target, data, ""


def _entry(entry_id: int) -> Any:
    with session_scope(web_context().engine) as session:
        entry = session.get(Entry, entry_id)
        return to_article(entry) if entry is not None else None


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """The removed (``-``) and added (``+``) lines between two versions of a file."""
    a, b = before.splitlines(), after.splitlines()
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "equal":
            out.extend(("-", line) for line in a[i1:i2])
            out.extend(("+", line) for line in b[j1:j2])
    return out


def history(subscriber_id: int, limit: int = HISTORY_SHOWN) -> list[ProfileChange]:
    """The subscriber's latest feedback changes, newest first (detached rows)."""
    with session_scope(web_context().engine) as session:
        rows = list(
            session.scalars(
                select(ProfileChange)
                .where(ProfileChange.subscriber_id == subscriber_id)
                .order_by(ProfileChange.id.desc())
                .limit(limit)
            )
        )
        session.expunge_all()
    return rows


def _operator_file() -> Any:
    body = render_template(
        "web/error.html",
        title="Kept by the list operator",
        message="This profile is kept by the list operator: reply to a digest to change it.",
    )
    return body, 403


@dataclass(frozen=True, slots=True)
class _Opened:
    target: LinkTarget
    data: FeedbackData
    article: Any


def _open(token: str) -> _Opened | Any:
    """The link's subscriber, token data and entry; or the page saying why it is invalid
    (the GET that asks and the POST that applies check the same things)."""
    target, data, why = _resolve(token)
    if target is None or data is None:
        return invalid_link(why)
    article = _entry(data.entry_id)
    if article is None:
        return invalid_link("entry gone")
    return _Opened(target, data, article)


@feedback.get("/feedback/<token>")
def ask(token: str) -> Any:
    opened = _open(token)
    if not isinstance(opened, _Opened):
        return opened
    data, article = opened.data, opened.article
    return render_template(
        "web/feedback_ask.html", token=token, direction=data.direction, article=article
    )


@feedback.post("/feedback/<token>")
def apply(token: str) -> Any:
    opened = _open(token)
    if not isinstance(opened, _Opened):
        return opened
    target, data, article = opened.target, opened.data, opened.article
    path = editable_path(target.id)
    if path is None:
        return _operator_file()
    subscribers_dir = web_context().settings.newsletter.subscribers_dir
    source = path.relative_to(subscribers_dir).as_posix()
    before = path.read_text(encoding="utf-8")
    profiles, _, _ = parse_profiles(before, source=source)
    mine = [p for p in profiles if p.email == normalise_email(target.email)]
    matches = Matcher([article]).match(mine[0]) if mine else []
    matched = [kw for m in matches for kw, _ in m.matched]
    operator = is_operator_file(path)
    document = (find_profile(before, target.email) if operator else yaml.safe_load(before)) or {}
    tuned, summary = tune(document, direction=data.direction, matched=matched, title=article.title)
    if operator:  # in place: the operator's comments and layout stay
        after = update_profile(
            before, target.email, tuned, source=source, managed=("keywords", "exclude")
        )
    else:
        after = profile_text(profile_document(tuned))
    change_id: int | None = None
    if after != before:
        write_atomic(path, after)
        with session_scope(web_context().engine) as session:
            change = ProfileChange(
                subscriber_id=target.id,
                entry_id=article.id,
                kind=data.direction,
                summary=summary,
                source_file=source,
                before_text=before,
                after_text=after,
            )
            session.add(change)
            session.flush()
            change_id = change.id
        sync_now(path)
        log.info("feedback: subscriber %d, %s like entry %d", target.id, data.direction, article.id)
    link = link_token_of(target)
    return render_template(
        "web/feedback_done.html",
        direction=data.direction,
        article=article,
        summary=summary,
        lines=changed_lines(before, after),
        file=source,
        change_id=change_id,
        undo_url=url_for("feedback.undo", token=link, change_id=change_id) if change_id else None,
        preferences_url=url_for("links.preferences", token=link),
        history=history(target.id),
    )


def link_token_of(target: LinkTarget) -> str:
    """The subscriber's own link token, for the Undo form and the preferences link."""
    sub = subscriber_by_email(target.email)
    if sub is None:
        raise TokenError("subscriber gone")
    return link_token(sub)


@feedback.post("/feedback/undo/<token>/<int:change_id>")
def undo(token: str, change_id: int) -> Any:
    with session_scope(web_context().engine) as session:
        target, why = resolve_link(session, token)
    if target is None:
        return invalid_link(why)
    path = editable_path(target.id)
    if path is None:
        return _operator_file()
    with session_scope(web_context().engine) as session:
        change = session.get(ProfileChange, change_id)
        if change is None or change.subscriber_id != target.id:
            return invalid_link("no such change for this subscriber")
        current = path.read_text(encoding="utf-8")
        if change.undone_at is None and current == change.after_text:
            write_atomic(path, change.before_text)
            change.undone_at = datetime.now(UTC)
            state = "undone"
        elif change.undone_at is not None:
            state = "already"
        else:
            state = "changed"
        summary, before, after = change.summary, change.before_text, change.after_text
    if state == "undone":
        sync_now(path)
        log.info("feedback: subscriber %d undid change %d", target.id, change_id)
    return render_template(
        "web/feedback_undone.html",
        state=state,
        summary=summary,
        lines=changed_lines(after, before),
        preferences_url=url_for("links.preferences", token=token),
    ), (200 if state != "changed" else 409)
