""" "View in browser": a sent digest's kept copy at ``/d/<token>``.

The link is signed for one subscriber row and one outbox row
(:func:`newsletter.tokens.make_digest_token`), so it opens only that digest and dies
with a rebuilt database or revoked links. A send keeps each digest for ``[web]
keep_digests_days``; after that (or once pruned) the link answers 410 and says so.
The page is the email's own HTML part, under a policy that lets it run nothing.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from flask import Blueprint, Response, render_template, url_for

from newsletter.db import session_scope
from newsletter.db.copies import kept_message, latest_copies, was_sent
from newsletter.db.suppressions import LinkTarget
from newsletter.errors import TokenError
from newsletter.tokens import make_digest_token, read_digest_token
from newsletter.web.context import web_context
from newsletter.web.routes import invalid_link, row_salts

digests = Blueprint("digests", __name__)

LISTED = 5  # digests the preferences page lists
# The email's markup only: its inline styles, its images; no script, no form, no frame.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _html_part(message: bytes) -> str | None:
    msg = email.message_from_bytes(message, policy=email.policy.default)
    if not isinstance(msg, EmailMessage):
        return None
    body = msg.get_body(preferencelist=("html",))
    content = body.get_content() if body is not None else None
    return content if isinstance(content, str) else None


@digests.get("/d/<token>")
def view(token: str) -> Any:
    ctx = web_context()
    now = datetime.now(UTC)
    with session_scope(ctx.engine) as session:
        salt_of, seen = row_salts(session)
        try:
            data = read_digest_token(
                ctx.secret, token, list_id=ctx.settings.newsletter.list_id, salt_of=salt_of
            )
        except TokenError as e:
            return invalid_link(str(e))
        target = seen.get(data.subscriber_id)
        if target is None or target.deleted:
            return invalid_link("subscriber gone")
        if data.version != target.token_version:
            return invalid_link("revoked link")
        found = kept_message(session, data.digest_id, now=now)
        if found is not None and found[0].subscriber_id != target.id:
            found = None  # not reached: the token names the row's owner
        sent = found is None and was_sent(session, data.digest_id, target.id)
    if found is None:
        days = ctx.settings.web.keep_digests_days
        kept = f"Digests are kept for {days} days." if days else "Digests are not kept."
        status = 410 if sent else 404
        title = "This digest is no longer kept" if sent else "No copy of this digest"
        body = render_template("web/error.html", title=title, message=kept)
        return body, status
    html = _html_part(found[1])
    if html is None:
        return render_template("web/error.html", title="No copy of this digest", message=""), 404
    resp = Response(html, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = _CSP
    return resp


@dataclass(frozen=True, slots=True)
class DigestLink:
    subject: str
    period: str
    url: str


def recent_digests(target: LinkTarget) -> list[DigestLink]:
    """The subscriber's latest kept digests with their View in browser links."""
    ctx = web_context()
    if ctx.settings.web.keep_digests_days <= 0:
        return []
    with session_scope(ctx.engine) as session:
        kept = latest_copies(session, target.id, now=datetime.now(UTC), limit=LISTED)
    out: list[DigestLink] = []
    for d in kept:
        token = make_digest_token(
            ctx.secret,
            subscriber_id=target.id,
            list_id=ctx.settings.newsletter.list_id,
            version=target.token_version,
            salt=target.token_salt,
            digest_id=d.digest_id,
        )
        out.append(DigestLink(d.subject, d.period, url_for("digests.view", token=token)))
    return out
