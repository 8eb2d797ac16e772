"""What the self-service routes share: the form's values, mails, files and the sync.

The form is turned into a profile's YAML text and checked by the validator of
``subscribers check`` (:mod:`newsletter.profiles.writer`), so the web shows the same
messages the operator would see. Files are written under the configured self-service
folder and synced at once, so the database follows the YAML, never the other way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from flask import render_template
from sqlalchemy import select

from newsletter.db import session_scope
from newsletter.delivery import OutgoingMessage, make_sender
from newsletter.models import Subscriber
from newsletter.pipeline.sync import sync_directory, sync_file
from newsletter.profiles import WEEKDAYS, normalise_email
from newsletter.profiles.writer import (
    Problems,
    check_text,
    keyword_items,
    profile_document,
    profile_text,
)
from newsletter.tokens import make_token
from newsletter.web.context import web_context

log = logging.getLogger(__name__)

FORM_FIELDS = ("email", "name", "keywords", "exclude", "frequency", "weekday", "send_time",
               "timezone", "max_items")  # fmt: skip


def form_values(form: Mapping[str, str]) -> dict[str, str]:
    """The text fields of a submitted form, stripped, with defaults for the rest."""
    n = web_context().settings.newsletter
    values = {k: (form.get(k) or "").strip() for k in FORM_FIELDS}
    values["frequency"] = values["frequency"] or "daily"
    values["weekday"] = values["weekday"] or WEEKDAYS[0]
    values["send_time"] = values["send_time"] or n.send_time
    values["timezone"] = values["timezone"] or n.timezone
    return values


def document_from(values: Mapping[str, str]) -> dict[str, Any]:
    """The profile mapping of the form's values (validation happens on its YAML)."""
    n = web_context().settings.newsletter
    max_items: Any = values.get("max_items") or None
    if isinstance(max_items, str) and max_items.isdigit():
        max_items = int(max_items)
    weekly = values.get("frequency") == "weekly"
    return profile_document(
        {
            "email": normalise_email(values.get("email", "")),
            "name": values.get("name") or None,
            "keywords": keyword_items(values.get("keywords", "")),
            "exclude": keyword_items(values.get("exclude", "")),
            "max_items": max_items,
            "frequency": values.get("frequency"),
            "weekday": values.get("weekday") if weekly else None,
            "send_time": None if values.get("send_time") == n.send_time else values["send_time"],
            "timezone": None if values.get("timezone") == n.timezone else values["timezone"],
        }
    )


def validate(document: Mapping[str, Any], *, source: str) -> tuple[str, Problems]:
    """The document's YAML text and its problems by form field.

    A missing keywords list gets the validator's own "required" message, and an
    address outside the allowed domains is refused here (the only rule the validator
    does not know).
    """
    text = profile_text(profile_document(document))  # one key order, whatever came in
    problems = check_text(text, source=source)
    domains = web_context().settings.subscribe.domains
    email = str(document.get("email", ""))
    if domains and "email" not in problems.by_field:
        domain = email.rpartition("@")[2]
        if not any(domain == d or domain.endswith("." + d) for d in domains):
            allowed = ", ".join(domains)
            merged = dict(problems.by_field)
            merged["email"] = (f"this list only takes addresses at {allowed}",)
            problems = Problems(merged)
    return text, problems


def subscriber_by_email(email: str) -> Subscriber | None:
    """The live (not deleted) subscriber with this address, detached."""
    with session_scope(web_context().engine) as session:
        sub = session.scalar(
            select(Subscriber).where(
                Subscriber.email == normalise_email(email), Subscriber.deleted_at.is_(None)
            )
        )
        if sub is not None:
            session.expunge(sub)
        return sub


def link_token(sub: Subscriber) -> str:
    """The subscriber's personal link token (the one the digests carry)."""
    ctx = web_context()
    return make_token(
        ctx.secret,
        subscriber_id=sub.id,
        list_id=ctx.settings.newsletter.list_id,
        version=sub.token_version,
        salt=sub.token_salt,
    )


def send_mail(recipient: str, template: str, subject: str, **context: Any) -> None:
    """A one-off plain-text mail (confirmation, already-subscribed) through the Sender
    the configuration names: the preview outbox or SMTP, DKIM-signed when configured.
    Raises :class:`~newsletter.errors.DeliveryError` when it cannot be sent."""
    settings = web_context().settings
    n = settings.newsletter
    msg = EmailMessage()
    msg["From"] = n.from_addr
    msg["To"] = recipient
    if n.reply_to:
        msg["Reply-To"] = n.reply_to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = parseaddr(n.from_addr)[1].rpartition("@")[2] or n.list_id
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render_template(template, **context))
    sender = make_sender(settings)
    try:
        sender.send(
            OutgoingMessage(
                envelope_from=parseaddr(n.from_addr)[1] or n.from_addr,
                recipient=recipient,
                data=msg.as_bytes(),
                message_id=str(msg["Message-ID"]),
                period=template.rsplit("/", 1)[-1].split(".")[0],
            )
        )
    finally:
        sender.close()


def sync_now(path: Path | None = None) -> None:
    """Sync the profile file the web just wrote (``path``), or with None every file, as
    ``subscribers sync`` does: a click re-reads one file, not the whole folder."""
    ctx = web_context()
    directory = ctx.settings.newsletter.subscribers_dir
    with session_scope(ctx.engine) as session:
        if path is None:
            loaded, _ = sync_directory(session, directory, now=datetime.now(UTC))
            problems = list(loaded.problems)
        else:
            source = path.relative_to(directory).as_posix()
            problems, _ = sync_file(session, directory, source, now=datetime.now(UTC))
    for problem in problems:
        log.warning("profile problem during web sync: %s", problem)


def self_service_folder() -> Path:
    s = web_context().settings
    return s.newsletter.subscribers_dir / s.subscribe.folder
