"""A test send: one subscriber's next digest, composed as ``send`` would, mailed elsewhere.

The operator sees exactly what the subscriber would get, in a real inbox, without the
outbox knowing: no digest row, no entries marked as sent, so the subscriber's next real
digest is the same as if the test had never happened. The copy is addressed to the
operator, its Subject starts with ``[test]``, it gets a Message-ID of its own (the real
digest's is stable per subscriber and period, and ``resend`` relies on it to settle an
ambiguous send) and loses ``List-Unsubscribe``: a mail client's one-click button would
otherwise unsubscribe the subscriber. The links in the body still act for them; it has
no "View in browser" link, as no copy of it is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import make_msgid, parseaddr

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter import clock as wallclock
from newsletter.config import Settings
from newsletter.db.candidates import window_starts
from newsletter.db.outbox import plan as outbox_plan
from newsletter.delivery import OutgoingMessage, Sender
from newsletter.errors import NewsletterError
from newsletter.periods import period_key
from newsletter.pipeline.compose import Composer
from newsletter.pipeline.jobs import ComposeFn, DigestJob

TEST_PREFIX = "[test] "
_DROPPED = {b"to", b"message-id", b"list-unsubscribe", b"list-unsubscribe-post"}


@dataclass(frozen=True, slots=True)
class TestSendResult:
    """What went out: whose digest, to where, and what the next real one would carry."""

    subscriber: str
    to: str
    period: str
    subject: str  # the digest's own subject, without the prefix
    entries: int
    message_id: str
    reply: str


def readdress(data: bytes, *, to: str, message_id: str) -> bytes:
    """``data`` with a new To and Message-ID, ``[test]`` before the Subject, no
    ``List-Unsubscribe``; the body's bytes untouched."""
    m = re.search(rb"\r?\n\r?\n", data)
    if m is None:
        raise NewsletterError("the composed digest has no body")
    head, rest = data[: m.start()], data[m.start() :]
    nl = b"\r\n" if head.find(b"\r\n") != -1 or rest.startswith(b"\r\n") else b"\n"
    fields: list[bytes] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += nl + line  # a folded continuation of the field above
        else:
            fields.append(line)
    out = [f"To: {to}".encode("ascii"), f"Message-ID: {message_id}".encode("ascii")]
    for f in fields:
        name = f.split(b":", 1)[0].strip().lower()
        if name in _DROPPED:
            continue
        if name == b"subject":
            f = b"Subject: " + TEST_PREFIX.encode("ascii") + f.split(b":", 1)[1].lstrip(b" ")
        out.append(f)
    return nl.join(out) + rest


def send_test(
    engine: Engine,
    settings: Settings,
    sender: Sender,
    *,
    email: str,
    to: str,
    compose: ComposeFn | None = None,
    now: Callable[[], datetime] | None = None,
) -> TestSendResult:
    """Compose ``email``'s next digest (its current period, the window ``send`` would
    use) and send it to ``to``; write nothing to the database."""
    at = (now or wallclock.now)()
    addr = parseaddr(to)[1]
    if not addr or "@" not in addr or not addr.isascii():
        raise NewsletterError(f"--to: expected an email address, got {to!r}")
    nl = settings.newsletter
    with Session(engine) as session:
        rows = outbox_plan.schedule_rows(session, emails=[email])
        if not rows:
            raise NewsletterError(
                f"no subscriber {email} who can be mailed "
                "(unknown, inactive, deleted or unsubscribed; see `newsletter subscribers`)"
            )
        row = rows[0]
        sid = row.subscriber_id
        frequency = {sid: outbox_plan.recipients(session, [sid])[sid][1]}
        start = window_starts(session, [sid], end=at, frequency_of=frequency)[sid]
        job = DigestJob(sid, period_key(row, at, nl.timezone), start, at)
        draft = dict((compose or Composer(settings))(session, [job])).get(sid)
        session.rollback()  # composing only reads; make sure nothing is kept
    if draft is None:
        raise NewsletterError(
            f"nothing new for {row.email} since their last digest: the next send skips "
            "them, so there is nothing to test (send_empty = true mails a note instead)"
        )
    domain = addr.rpartition("@")[2]
    message_id = make_msgid(idstring="test", domain=domain)
    data = readdress(draft.data, to=addr, message_id=message_id)
    envelope_from = parseaddr(nl.from_addr)[1] or nl.from_addr
    receipt = sender.send(
        OutgoingMessage(
            envelope_from=envelope_from,
            recipient=addr,
            data=data,
            message_id=message_id,
            period=f"test-{job.period}",
        )
    )
    return TestSendResult(
        subscriber=row.email,
        to=addr,
        period=job.period,
        subject=draft.subject,
        entries=len(draft.entries),
        message_id=message_id,
        reply=receipt.reply,
    )
