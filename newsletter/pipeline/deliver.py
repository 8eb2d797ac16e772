"""Deliver one composed batch: mark, send, record — with the guarantees of ``send``.

Each message is marked ``sending`` (with its entries) right before its DATA and
``sent`` after the server accepted it, through :class:`~newsletter.pipeline.group_commit.
OutboxMarks`, so the marks of concurrent connections share transactions. Failures are
sorted here: a temporary one is rescheduled with backoff, a permanent one (or the last
attempt) fails the digest, and a server that cannot be reached at all stops the batch
(:class:`~newsletter.delivery.SmtpUnavailableError`) with the rest released unharmed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import timedelta
from email.utils import parseaddr
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import outbox, session_scope
from newsletter.db.copies import SentCopy, compress_copy, keep_copies
from newsletter.db.outbox.bulk import SendingMark, SentMark, unmark_sending
from newsletter.delivery import (
    OutgoingMessage,
    SmtpUnavailableError,
    backoff_seconds,
)
from newsletter.errors import DeliveryError
from newsletter.pipeline.context import RunContext
from newsletter.pipeline.group_commit import OutboxMarks
from newsletter.pipeline.jobs import DigestJob, Draft
from newsletter.pipeline.logs import bound, log_context
from newsletter.pipeline.send_report import Outcome

log = logging.getLogger(__name__)

Item = tuple[outbox.Claim, DigestJob, Draft]


class CountFn(Protocol):
    def __call__(self, outcome: Outcome, recipient: str, reason: str | None = None) -> None: ...


def _envelope_from(settings: Settings) -> str:
    return parseaddr(settings.newsletter.from_addr)[1] or settings.newsletter.from_addr


class _Abort(Exception):
    """``before_data`` refused: the claim was lost, or the draft went stale."""

    def __init__(self, result: outbox.MarkResult) -> None:
        super().__init__(result)
        self.result = result


class Delivery:
    """Sends the batches of one run; keeps the run's group-committed outbox marks."""

    def __init__(self, ctx: RunContext, *, count: CountFn) -> None:
        self.ctx = ctx
        self._count = count
        self.marks = OutboxMarks(ctx.engine, ctx.worker)
        self.envelope_from = _envelope_from(ctx.settings)
        self._stale: set[int] = set()
        self._copies: list[SentCopy] = []  # sent since the last keep (View in browser)
        self._copies_lock = threading.Lock()

    def deliver(self, items: Sequence[Item], *, also_held: Sequence[int] = ()) -> None:
        """Send with ``sender.parallelism`` threads; renew the leases while it takes.

        ``also_held``: digests claimed for the next batch (being composed meanwhile),
        whose leases must not run out while a slow server takes this one.
        """
        halt = threading.Event()  # stop handing out work: SIGTERM or server unavailable
        unavailable: list[SmtpUnavailableError] = []
        queue = list(reversed(items))
        queue_lock = threading.Lock()
        done_ids: set[int] = set()

        def worker() -> None:
            while not (halt.is_set() or self.ctx.stop.is_set()):
                with queue_lock:
                    if not queue:
                        return
                    claim, req, draft = queue.pop()
                try:
                    with log_context(digest_id=claim.id, subscriber_id=claim.subscriber_id):
                        self._send_one(claim, req, draft)
                except SmtpUnavailableError as e:
                    unavailable.append(e)  # not this digest's fault: released below
                    halt.set()
                    return
                except BaseException:
                    halt.set()
                    raise
                with queue_lock:
                    done_ids.add(claim.id)

        n = max(1, min(self.ctx.sender.parallelism, len(items)))
        renew_every = max(1.0, self.ctx.options.lease.total_seconds() / 3)
        try:
            with ThreadPoolExecutor(n, thread_name_prefix="send") as pool:
                futures = [pool.submit(bound(worker)) for _ in range(n)]
                while True:
                    finished, running = wait(
                        futures, timeout=renew_every, return_when=FIRST_EXCEPTION
                    )
                    if not running or any(f.exception() for f in finished if f.done()):
                        break
                    with queue_lock:
                        left = [c.id for c, _, _ in items if c.id not in done_ids]
                        left.extend(also_held)
                    with session_scope(self.ctx.engine) as session:
                        outbox.renew_claims(
                            session,
                            self.ctx.worker,
                            left,
                            until=self.ctx.clock.now() + self.ctx.options.lease,
                        )
                halt.set()
            for f in futures:
                exc = f.exception()
                if exc is not None:
                    raise exc
        finally:
            self.marks.flush()  # the last "sent" marks, before anything else is decided
            self._keep_copies()
        leftover = [c.id for c, _, _ in items if c.id not in done_ids]
        if leftover:
            with session_scope(self.ctx.engine) as session:
                outbox.release_claims(session, self.ctx.worker, leftover)
        if unavailable:
            raise unavailable[0]

    def _keep_copies(self) -> None:
        """Keep what this batch sent for "View in browser"; a failure here is logged, never
        the send's (the mail has gone)."""
        with self._copies_lock:
            copies, self._copies = self._copies, []
        days = self.ctx.settings.web.keep_digests_days
        if not copies or days <= 0:
            return
        try:
            with session_scope(self.ctx.engine) as session:
                keep_copies(session, copies, now=self.ctx.clock.now(), days=days)
        except SQLAlchemyError:
            log.exception("could not keep %d sent digests for View in browser", len(copies))

    def _send_one(self, claim: outbox.Claim, req: DigestJob, draft: Draft) -> None:
        msg = OutgoingMessage(
            envelope_from=self.envelope_from,
            recipient=draft.recipient,
            data=draft.data,
            message_id=draft.message_id,
            digest_id=claim.id,
            period=claim.period,
            plain_lines=draft.plain_lines,
        )

        marked = False

        def before_data() -> None:
            nonlocal marked
            result = self.marks.sending(
                SendingMark(
                    digest_id=claim.id,
                    subscriber_id=claim.subscriber_id,
                    subject=draft.subject,
                    message_id=draft.message_id,
                    window_start=req.window_start,
                    window_end=req.window_end,
                    entries=draft.entries,
                    lease_until=self.ctx.clock.now() + self.ctx.options.lease,
                )
            )
            if result != "ok":
                raise _Abort(result)  # nothing was written for this digest
            marked = True

        try:
            receipt = self.ctx.sender.send(msg, before_data)
        except _Abort as a:
            self._aborted(claim, draft, a.result)
            return
        except SmtpUnavailableError:
            if marked:  # pipelined: marked before MAIL, but nothing of it was sent
                with session_scope(self.ctx.engine) as session:
                    unmark_sending(session, self.ctx.worker, [claim.id])
            raise
        except DeliveryError as e:
            # A reply to DATA, or a connection lost before it: not accepted. (A connection
            # lost after the final dot is undecidable in SMTP itself, RFC 1047; like every
            # MTA we retry.)
            self._delivery_failed(claim, req, draft, e)
            return
        except Exception as e:
            if marked:
                log.exception(
                    "digest %d to %s: unexpected error while sending; left in 'sending' "
                    "(settle with `newsletter resend %d`)",
                    claim.id,
                    draft.recipient,
                    claim.id,
                )
                return
            log.exception("digest %d to %s: unexpected error", claim.id, draft.recipient)
            self._delivery_failed(claim, req, draft, DeliveryError(f"unexpected error: {e!r}"))
            return
        # Written with the next group of marks (see ``group_commit``), not waited for.
        self.marks.sent(SentMark(claim.id, receipt.reply, self.ctx.clock.now()))
        if self.ctx.settings.web.keep_digests_days > 0:
            kept = draft.kept if draft.kept is not None else compress_copy(draft.data)
            copy = SentCopy(claim.id, claim.subscriber_id, claim.period, draft.subject, kept)
            with self._copies_lock:
                self._copies.append(copy)
        log.debug(
            "sent digest %d (%s) to %s: %s", claim.id, claim.period, draft.recipient, receipt.reply
        )
        self._count("sent", draft.recipient)

    def _aborted(self, claim: outbox.Claim, draft: Draft, result: outbox.MarkResult) -> None:
        if result == "lost":
            log.debug("digest %d was taken over or superseded; not sending it", claim.id)
            self._count("lost", draft.recipient)
            return
        # Stale: an entry of the draft went out in another digest meanwhile. Compose again
        # (once); if it happens again, treat it as a temporary failure.
        with session_scope(self.ctx.engine) as session:
            if claim.id in self._stale:
                self._reschedule(session, claim, draft, "composed entries already sent; retrying")
            else:
                self._stale.add(claim.id)
                outbox.release_claims(session, self.ctx.worker, [claim.id])
                self._count("released", draft.recipient)

    def _delivery_failed(
        self, claim: outbox.Claim, req: DigestJob, draft: Draft, e: DeliveryError
    ) -> None:
        reason = str(e)
        with session_scope(self.ctx.engine) as session:
            if e.permanent or claim.attempts + 1 >= self.ctx.settings.smtp.max_attempts:
                if not e.permanent:
                    reason = f"gave up after {claim.attempts + 1} attempts: {reason}"
                outbox.mark_failed(
                    session, claim.id, self.ctx.worker, error=reason, window_start=req.window_start
                )
                log.error("digest %d to %s failed: %s", claim.id, draft.recipient, reason)
                self._count("failed", draft.recipient, reason)
            else:
                self._reschedule(session, claim, draft, reason)

    def _reschedule(self, session: Session, claim: outbox.Claim, draft: Draft, reason: str) -> None:
        smtp = self.ctx.settings.smtp
        delay = backoff_seconds(
            claim.attempts + 1, smtp.retry_base_seconds, smtp.retry_max_seconds, self.ctx.rng
        )
        at = self.ctx.clock.now() + timedelta(seconds=delay)
        outbox.reschedule(session, claim.id, self.ctx.worker, error=reason, next_attempt_at=at)
        log.warning(
            "digest %d to %s: %s; retry %d in %.1fs",
            claim.id,
            draft.recipient,
            reason,
            claim.attempts + 2,
            delay,
        )
        self._count("retried", draft.recipient)
