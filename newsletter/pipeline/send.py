"""One send run: plan the due digests, then claim -> compose -> send -> record, batch by batch.

Exactly-once rests on the order of writes for each digest::

    claim (commit) -> compose (read only) -> SMTP MAIL/RCPT accepted
        -> mark ``sending`` with its entries (commit) -> DATA -> mark ``sent`` (commit)

``sending`` is committed at the last moment the process still knows the message has not
left, so a crash leaves at most the digests whose DATA was in flight in ``sending``.
Those are the only ambiguous ones — the server may or may not have accepted them — and
no run re-sends them by itself: ``newsletter status`` lists them and ``newsletter
resend`` settles them. A ``sending`` row whose process died before DATA cannot be told
apart from one that died after; marking it only just before DATA keeps that window to
one database commit.

Temporary failures go back to ``pending`` with a backoff (``next_attempt_at``), and this
run waits for them (``wait_for_retries``); permanent ones, or the last attempt, end
``failed`` and the run goes on with the others. A server that cannot be reached at all
charges no digest: the run retries the connection with backoff, then stops and leaves
every digest pending for the next run.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import outbox, outbox_admin, outbox_plan, session_scope
from newsletter.db.articles import window_starts
from newsletter.db.entries import finish_run, start_run
from newsletter.db.leases import new_worker_id
from newsletter.delivery import (
    OutgoingMessage,
    Sender,
    SmtpUnavailableError,
    backoff_seconds,
)
from newsletter.errors import ConfigError, DeliveryError, NewsletterError
from newsletter.periods import due_period, period_key
from newsletter.pipeline.drafts import ComposeFn, ComposerAdapter, ComposeRequest, Draft
from newsletter.pipeline.send_report import (
    Outcome,
    Planned,
    SendOptions,
    SendProgress,
    SendSummary,
)

log = logging.getLogger(__name__)


def _compose_failure(req: ComposeRequest, e: Exception) -> str:
    if isinstance(e, NewsletterError):
        log.error("digest %d: could not compose: %s", req.digest_id, e)
    else:  # a bug: keep the traceback in the log
        log.exception("digest %d: could not compose", req.digest_id)
    return f"could not compose: {e}"


class _Abort(Exception):
    """``before_data`` refused: the claim was lost, or the draft went stale."""

    def __init__(self, result: outbox.MarkResult) -> None:
        super().__init__(result)
        self.result = result


@dataclass
class _Clock:
    now: Callable[[], datetime]
    sleep: Callable[[float], None]


def _envelope_from(settings: Settings) -> str:
    return parseaddr(settings.newsletter.from_addr)[1] or settings.newsletter.from_addr


class SendRun:
    """One run's state: the engine, the sender, the clock, the counters."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        sender: Sender,
        compose: ComposeFn,
        *,
        options: SendOptions,
        clock: _Clock,
        stop: threading.Event,
        progress: SendProgress | None,
        worker: str,
        rng: random.Random,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.sender = sender
        self.compose = compose
        self.options = options
        self.clock = clock
        self.stop = stop
        self.progress = progress
        self.worker = worker
        self.rng = rng
        self.summary = SendSummary(dry_run=options.dry_run)
        self.scope: list[int] | None = None  # subscriber ids of --subscriber
        self._lock = threading.Lock()
        self._stale: set[int] = set()

    # -- planning --------------------------------------------------------------------------

    def due(self, session: Session, now: datetime) -> list[tuple[int, str]]:
        """(subscriber id, period) of every subscriber whose digest is due at ``now``."""
        nl = self.settings.newsletter
        rows = outbox_plan.schedule_rows(session, emails=self.options.emails)
        if self.options.emails is not None:
            found = {r.email.lower() for r in rows}
            missing = [e for e in self.options.emails if e.strip().lower() not in found]
            if missing:
                raise NewsletterError(
                    f"no subscriber {missing[0]} who can be mailed "
                    "(unknown, inactive, deleted or unsubscribed; see `newsletter subscribers`)"
                )
            self.scope = [r.subscriber_id for r in rows]
        due: list[tuple[int, str]] = []
        for r in rows:
            try:
                if self.options.force:
                    period: str | None = period_key(r, now, nl.timezone)
                else:
                    period = due_period(r, now, nl.default_send_time, nl.timezone)
            except ConfigError as e:  # a timezone this machine does not know: skip them
                log.error("subscriber %s: %s; no digest planned", r.email, e)
                continue
            if period is not None:
                due.append((r.subscriber_id, period))
        return due

    def requests(
        self, session: Session, claims: Sequence[outbox.Claim], now: datetime
    ) -> list[ComposeRequest]:
        ids = [c.subscriber_id for c in claims]
        who = outbox_plan.recipients(session, ids)
        frequency = {sid: freq for sid, (_, freq) in who.items()}
        starts = window_starts(session, ids, end=now, frequency_of=frequency)
        return [
            ComposeRequest(c.id, c.subscriber_id, c.period, starts[c.subscriber_id], now)
            for c in claims
        ]

    # -- the run ---------------------------------------------------------------------------

    def dry_run(self) -> SendSummary:
        """Compose what would go out now, and write nothing."""
        now = self.clock.now()
        with Session(self.engine) as session:
            due = self.due(session, now)
            closed = outbox_plan.closed_periods(session, due)
            todo = [(sid, p) for sid, p in due if (sid, p) not in closed]
            batch = self.settings.newsletter.batch_size
            for i in range(0, len(todo), batch):
                claims = [outbox.Claim(0, sid, p, 0) for sid, p in todo[i : i + batch]]
                reqs = self.requests(session, claims, now)
                drafts = self._compose_isolated(session, reqs)
                who = outbox_plan.recipients(session, [c.subscriber_id for c in claims])
                for req in reqs:
                    got = drafts.get(req.subscriber_id)
                    email = who.get(req.subscriber_id, ("?", ""))[0]
                    if isinstance(got, Draft):
                        self.summary.planned.append(
                            Planned(email, req.period, got.subject, len(got.entries), len(got.data))
                        )
                    else:
                        self.summary.planned.append(Planned(email, req.period, got, 0))
            session.rollback()  # whatever compose touched, a dry run writes nothing
        return self.summary

    def run(self) -> SendSummary:
        if self.options.dry_run:
            return self.dry_run()
        started = self.clock.now()
        with session_scope(self.engine) as session:
            due = self.due(session, started)
            self.summary.created = outbox_plan.ensure_digests(session, due, now=started)
            self.summary.run_id = start_run(session, "send", now=started)
        if self.progress is not None:
            with session_scope(self.engine) as session:
                total = outbox.pending_count(session, self.scope, due_by=started)
            self.progress.start(total)
        try:
            self._loop()
        except BaseException:
            self.summary.interrupted = True
            try:
                self._finish(crashed=True)
            except SQLAlchemyError:  # the database may be why we are here
                log.exception("could not record the end of send run %s", self.summary.run_id)
            raise
        return self._finish()

    def _finish(self, *, crashed: bool = False) -> SendSummary:
        now = self.clock.now()
        with session_scope(self.engine) as session:
            # Whatever this run still holds goes back at once, not when the lease ends.
            outbox.release_worker(session, self.worker)
        with session_scope(self.engine) as session:
            self.summary.pending = outbox.pending_count(session, self.scope)
            self.summary.ambiguous = sum(
                1 for d in outbox_admin.ambiguous(session, now=now) if not d.in_flight
            )
            if self.summary.run_id is not None:
                status = "ok" if self.summary.ok and not crashed else "error"
                finish_run(
                    session,
                    self.summary.run_id,
                    status=status,
                    summary=self.summary.as_dict(),
                    now=now,
                )
        return self.summary

    def _loop(self) -> None:
        try:
            self._rounds()
        finally:
            if self.stop.is_set():
                self.summary.interrupted = True

    def _rounds(self) -> None:
        smtp = self.settings.smtp
        strikes = 0
        while not self.stop.is_set():
            now = self.clock.now()
            with session_scope(self.engine) as session:
                claims = outbox.claim_batch(
                    session,
                    self.worker,
                    now=now,
                    limit=self.settings.newsletter.batch_size,
                    lease=self.options.lease,
                    subscriber_ids=self.scope,
                )
            if not claims:
                if not self._wait_for_retry(now):
                    return
                continue
            try:
                self._batch(claims)
                strikes = 0
            except SmtpUnavailableError as e:
                strikes += 1
                if e.permanent or strikes >= smtp.max_attempts:
                    self.summary.error = f"SMTP server unavailable: {e}"
                    log.error("%s; the digests stay pending for the next run", self.summary.error)
                    return
                delay = backoff_seconds(
                    strikes, smtp.retry_base_seconds, smtp.retry_max_seconds, self.rng
                )
                log.warning("%s; trying again in %.1fs", e, delay)
                self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and not self.stop.is_set():
            self.clock.sleep(seconds)

    def _wait_for_retry(self, now: datetime) -> bool:
        """Sleep until the next rescheduled digest is due; False when none is waiting."""
        if not self.options.wait_for_retries:
            return False
        with session_scope(self.engine) as session:
            at = outbox.next_retry_at(session, now=now, subscriber_ids=self.scope)
        if at is None:
            return False
        self._sleep(max(0.0, (at - now).total_seconds()))
        return not self.stop.is_set()

    # -- one batch -------------------------------------------------------------------------

    def _compose_isolated(
        self, session: Session, reqs: Sequence[ComposeRequest]
    ) -> dict[int, Draft | str | None]:
        """Compose the batch; if that fails, each digest alone, so one bad one is isolated.

        A configuration or database error is the run's problem, not a digest's: raised.
        """
        try:
            return dict(self.compose(session, self.settings, reqs))
        except (ConfigError, SQLAlchemyError):
            raise
        except Exception as e:
            if len(reqs) == 1:
                return {reqs[0].subscriber_id: _compose_failure(reqs[0], e)}
            log.warning("composing a batch failed (%s); composing one by one", e)
        out: dict[int, Draft | str | None] = {}
        for r in reqs:
            try:
                out.update(self.compose(session, self.settings, [r]))
            except (ConfigError, SQLAlchemyError):
                raise
            except Exception as e:
                out[r.subscriber_id] = _compose_failure(r, e)
        return out

    def _batch(self, claims: Sequence[outbox.Claim]) -> None:
        now = self.clock.now()
        with session_scope(self.engine) as session:
            live = outbox_plan.deliverable_ids(session, [c.subscriber_id for c in claims])
            reqs = self.requests(session, claims, now)
            drafts = self._compose_isolated(session, [r for r in reqs if r.subscriber_id in live])
            who = outbox_plan.recipients(session, [c.subscriber_id for c in claims])
        by_sub = {c.subscriber_id: c for c in claims}
        to_send: list[tuple[outbox.Claim, ComposeRequest, Draft]] = []
        with session_scope(self.engine) as session:
            for req in reqs:
                claim = by_sub[req.subscriber_id]
                email = who.get(req.subscriber_id, ("?", ""))[0]
                if req.subscriber_id not in live:
                    # Unsubscribed or deactivated since the digest was planned.
                    outbox.mark_skipped(
                        session, claim.id, self.worker, window_start=None, window_end=now
                    )
                    self._count("skipped", email)
                    continue
                got = drafts.get(req.subscriber_id)
                if isinstance(got, Draft):
                    to_send.append((claim, req, got))
                elif isinstance(got, str):
                    outbox.mark_failed(
                        session, claim.id, self.worker, error=got, window_start=req.window_start
                    )
                    self._count("failed", email, got)
                else:
                    outbox.mark_skipped(
                        session,
                        claim.id,
                        self.worker,
                        window_start=req.window_start,
                        window_end=req.window_end,
                    )
                    self._count("skipped", email)
        if to_send:
            self._deliver(to_send)

    def _deliver(self, items: Sequence[tuple[outbox.Claim, ComposeRequest, Draft]]) -> None:
        """Send with ``sender.parallelism`` threads; renew the leases while it takes."""
        halt = threading.Event()  # stop handing out work: SIGTERM or server unavailable
        unavailable: list[SmtpUnavailableError] = []
        queue = list(reversed(items))
        queue_lock = threading.Lock()
        done_ids: set[int] = set()

        def worker() -> None:
            while not (halt.is_set() or self.stop.is_set()):
                with queue_lock:
                    if not queue:
                        return
                    claim, req, draft = queue.pop()
                try:
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

        n = max(1, min(self.sender.parallelism, len(items)))
        renew_every = max(1.0, self.options.lease.total_seconds() / 3)
        with ThreadPoolExecutor(n, thread_name_prefix="send") as pool:
            futures = [pool.submit(worker) for _ in range(n)]
            while True:
                finished, running = wait(futures, timeout=renew_every, return_when=FIRST_EXCEPTION)
                if not running or any(f.exception() for f in finished if f.done()):
                    break
                with queue_lock:
                    left = [c.id for c, _, _ in items if c.id not in done_ids]
                with session_scope(self.engine) as session:
                    outbox.renew_claims(
                        session, self.worker, left, until=self.clock.now() + self.options.lease
                    )
            halt.set()
        for f in futures:
            exc = f.exception()
            if exc is not None:
                raise exc
        leftover = [c.id for c, _, _ in items if c.id not in done_ids]
        if leftover:
            with session_scope(self.engine) as session:
                outbox.release_claims(session, self.worker, leftover)
        if unavailable:
            raise unavailable[0]

    def _send_one(self, claim: outbox.Claim, req: ComposeRequest, draft: Draft) -> None:
        msg = OutgoingMessage(
            envelope_from=_envelope_from(self.settings),
            recipient=draft.recipient,
            data=draft.data,
            message_id=draft.message_id,
            digest_id=claim.id,
            period=claim.period,
        )

        marked = False

        def before_data() -> None:
            nonlocal marked
            with session_scope(self.engine) as session:
                result = outbox.mark_sending(
                    session,
                    claim.id,
                    self.worker,
                    subscriber_id=claim.subscriber_id,
                    subject=draft.subject,
                    message_id=draft.message_id,
                    window_start=req.window_start,
                    window_end=req.window_end,
                    entries=draft.entries,
                    lease_until=self.clock.now() + self.options.lease,
                )
                if result != "ok":
                    raise _Abort(result)  # rolls the transaction back
            marked = True

        try:
            receipt = self.sender.send(msg, before_data)
        except _Abort as a:
            self._aborted(claim, draft, a.result)
            return
        except SmtpUnavailableError:
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
        with session_scope(self.engine) as session:
            recorded = outbox.mark_sent(
                session, claim.id, self.worker, reply=receipt.reply, now=self.clock.now()
            )
        if not recorded:
            log.warning(
                "digest %d to %s was delivered but changed state meanwhile (settled by hand?)",
                claim.id,
                draft.recipient,
            )
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
        with session_scope(self.engine) as session:
            if claim.id in self._stale:
                self._reschedule(session, claim, draft, "composed entries already sent; retrying")
            else:
                self._stale.add(claim.id)
                outbox.release_claims(session, self.worker, [claim.id])
                self._count("released", draft.recipient)

    def _delivery_failed(
        self, claim: outbox.Claim, req: ComposeRequest, draft: Draft, e: DeliveryError
    ) -> None:
        reason = str(e)
        with session_scope(self.engine) as session:
            if e.permanent or claim.attempts + 1 >= self.settings.smtp.max_attempts:
                if not e.permanent:
                    reason = f"gave up after {claim.attempts + 1} attempts: {reason}"
                outbox.mark_failed(
                    session, claim.id, self.worker, error=reason, window_start=req.window_start
                )
                log.error("digest %d to %s failed: %s", claim.id, draft.recipient, reason)
                self._count("failed", draft.recipient, reason)
            else:
                self._reschedule(session, claim, draft, reason)

    def _reschedule(self, session: Session, claim: outbox.Claim, draft: Draft, reason: str) -> None:
        smtp = self.settings.smtp
        delay = backoff_seconds(
            claim.attempts + 1, smtp.retry_base_seconds, smtp.retry_max_seconds, self.rng
        )
        at = self.clock.now() + timedelta(seconds=delay)
        outbox.reschedule(session, claim.id, self.worker, error=reason, next_attempt_at=at)
        log.warning(
            "digest %d to %s: %s; retry %d in %.1fs",
            claim.id,
            draft.recipient,
            reason,
            claim.attempts + 2,
            delay,
        )
        self._count("retried", draft.recipient)

    def _count(self, outcome: Outcome, recipient: str, reason: str | None = None) -> None:
        with self._lock:
            if outcome == "sent":
                self.summary.sent += 1
            elif outcome == "skipped":
                self.summary.skipped += 1
            elif outcome == "failed":
                self.summary.failed += 1
                self.summary.failures.append((recipient, reason or ""))
            elif outcome == "retried":
                self.summary.retried += 1
        if self.progress is not None and outcome in ("sent", "skipped", "failed"):
            self.progress.advance(outcome, recipient)


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)  # a stop request cuts the wait short


def send_due(
    engine: Engine,
    settings: Settings,
    sender: Sender,
    *,
    compose: ComposeFn | None = None,
    options: SendOptions | None = None,
    now: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
    progress: SendProgress | None = None,
    worker: str | None = None,
    rng: random.Random | None = None,
) -> SendSummary:
    """Deliver every digest due now (or, with ``options.force``, every current one).

    ``now`` and ``sleep`` drive time (tests pass a fake clock); ``stop`` ends the run
    after the messages in flight, which are recorded first (SIGTERM in ``run``).
    """
    stop = stop or threading.Event()
    clock = _Clock(
        now=now or (lambda: datetime.now(UTC)),
        sleep=sleep or (lambda seconds: _wait(stop, seconds)),
    )
    run = SendRun(
        engine,
        settings,
        sender,
        compose or ComposerAdapter(settings),
        options=options or SendOptions(),
        clock=clock,
        stop=stop,
        progress=progress,
        worker=worker or new_worker_id(),
        rng=rng or random.Random(),
    )
    return run.run()


__all__ = [
    "ComposeFn",
    "ComposeRequest",
    "Draft",
    "Outcome",
    "Planned",
    "SendOptions",
    "SendProgress",
    "SendSummary",
    "send_due",
]
