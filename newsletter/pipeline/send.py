"""One send run: plan the due digests, then claim -> compose -> send -> record, batch by batch.

Exactly-once rests on the order of writes for each digest::

    claim (commit) -> compose (read only) -> SMTP MAIL/RCPT accepted
        -> mark ``sending`` with its entries (commit) -> DATA -> mark ``sent`` (commit)

``sending`` is committed at the last moment the process still knows the message has not
left, so a crash leaves at most the digests whose DATA was in flight (or whose ``sent``
mark was still queued, see :mod:`~newsletter.pipeline.group_commit`) in ``sending``.
Those are the only ambiguous ones — the server may or may not have accepted them — and
no run re-sends them by itself: ``newsletter status`` lists them and ``newsletter
resend`` settles them. The marks of concurrent connections share transactions (group
commit), which changes none of this.

Batches overlap: while one batch is delivered (:mod:`~newsletter.pipeline.deliver`),
the next is claimed and composed in a background thread that only reads — on SQLite
through a second engine that reads a snapshot beside the writer. A draft that became
stale meanwhile (one of its entries went out in another digest) is refused by its
``sending`` mark and composed again.

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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter import clock as wallclock
from newsletter.config import Settings
from newsletter.db import core as db_core
from newsletter.db import outbox, session_scope
from newsletter.db.copies import prune_copies
from newsletter.db.leases import new_worker_id
from newsletter.db.outbox import admin as outbox_admin
from newsletter.db.outbox import plan as outbox_plan
from newsletter.db.outbox.bulk import SkippedMark, mark_skipped_many
from newsletter.db.runs import finish_run, start_run
from newsletter.delivery import Sender, SmtpUnavailableError, backoff_seconds
from newsletter.errors import ConfigError, NewsletterError
from newsletter.pipeline.compose import Composer
from newsletter.pipeline.context import Clock, RunContext
from newsletter.pipeline.deliver import Delivery, Item
from newsletter.pipeline.jobs import Composed, ComposeFailed, ComposeFn, DigestJob, Draft
from newsletter.pipeline.logs import bound, log_context
from newsletter.pipeline.plan import digest_jobs, due_digests, due_pages
from newsletter.pipeline.send_report import (
    Outcome,
    Planned,
    SendOptions,
    SendProgress,
    SendSummary,
)

log = logging.getLogger(__name__)


def _compose_failure(job: DigestJob, e: Exception) -> ComposeFailed:
    if isinstance(e, NewsletterError):
        log.error("digest %s: could not compose: %s", job.digest_id, e)
    else:  # a bug: keep the traceback in the log
        log.exception("digest %s: could not compose", job.digest_id)
    return ComposeFailed(f"could not compose: {e}")


@dataclass(frozen=True, slots=True)
class _Composed:
    """A batch composed and not yet recorded: what ``_record`` and delivery need."""

    claims: Sequence[outbox.Claim]
    jobs: list[DigestJob]
    live: set[int]  # subscribers still deliverable
    drafts: dict[int, Composed]
    who: dict[int, tuple[str, str]]
    now: datetime


class SendRun:
    """One run's state: the engine, the sender, the clock, the counters."""

    def __init__(
        self, ctx: RunContext, compose: ComposeFn, *, progress: SendProgress | None
    ) -> None:
        self.ctx = ctx
        self.compose = compose
        self.progress = progress
        self.summary = SendSummary(dry_run=ctx.options.dry_run)
        self.scope: list[int] | None = None  # subscriber ids of --subscriber
        self.digest_ids: list[int] | None = None  # a queued batch: only these digests
        self._lock = threading.Lock()
        self.delivery = Delivery(ctx, count=self._count)
        # Composing reads through its own engine, so that on SQLite it reads a snapshot
        # beside the delivery's writes instead of holding the write lock meanwhile.
        self.reader: Engine | None = None

    # -- planning --------------------------------------------------------------------------

    def due_pages(self, session: Session, now: datetime) -> Iterator[list[tuple[int, str]]]:
        """(subscriber id, period) of each subscriber whose digest is due at ``now``, a
        page at a time; with ``--subscriber``, one page, and the run's scope is them."""
        options = self.ctx.options
        if options.emails is None:
            yield from due_pages(session, self.ctx.settings, now, force=options.force)
            return
        due, self.scope = due_digests(
            session, self.ctx.settings, options.emails, now, force=options.force
        )
        yield due

    def plan(self, session: Session, now: datetime) -> int:
        """Create the pending digests due at ``now``, page by page; how many were new."""
        return sum(
            outbox_plan.ensure_digests(session, due, now=now)
            for due in self.due_pages(session, now)
        )

    # -- the run ---------------------------------------------------------------------------

    def dry_run(self) -> SendSummary:
        """Compose what would go out now, and write nothing."""
        now = self.ctx.clock.now()
        with Session(self.ctx.engine) as session:
            for due in self.due_pages(session, now):
                self._dry_page(session, due, now)
            session.rollback()  # whatever compose touched, a dry run writes nothing
        return self.summary

    def _dry_page(self, session: Session, due: Sequence[tuple[int, str]], now: datetime) -> None:
        """Compose one page of a dry run, batch by batch, and note what each would be."""
        closed = outbox_plan.closed_periods(session, due)
        todo = [(sid, p) for sid, p in due if (sid, p) not in closed]
        batch = self.ctx.settings.newsletter.batch_size
        for i in range(0, len(todo), batch):
            claims = [outbox.Claim(0, sid, p, 0) for sid, p in todo[i : i + batch]]
            who = outbox_plan.recipients(session, [c.subscriber_id for c in claims])
            reqs = digest_jobs(session, claims, now, who)
            drafts = self._compose_isolated(session, reqs)
            for req in reqs:
                got = drafts.get(req.subscriber_id)
                email = who.get(req.subscriber_id, ("?", ""))[0]
                if isinstance(got, Draft):
                    self.summary.planned.append(
                        Planned(email, req.period, got.subject, len(got.entries), len(got.data))
                    )
                else:
                    why = got.reason if isinstance(got, ComposeFailed) else None
                    self.summary.planned.append(Planned(email, req.period, why, 0))

    def run(self) -> SendSummary:
        if self.ctx.options.dry_run:
            return self.dry_run()
        started = self.ctx.clock.now()
        with session_scope(self.ctx.engine) as session:
            self.summary.created = self.plan(session, started)
            self.summary.run_id = start_run(session, "send", now=started)
        if self.progress is not None:
            with session_scope(self.ctx.engine) as session:
                total = outbox.pending_count(session, self.scope, due_by=started)
            self.progress.start(total)
        self.reader = db_core.reader_engine(self.ctx.engine)
        try:
            with log_context(run_id=self.summary.run_id):
                self._loop()
        except BaseException:
            self.summary.interrupted = True
            try:
                self.finish(crashed=True)
            except SQLAlchemyError:  # the database may be why we are here
                log.exception("could not record the end of send run %s", self.summary.run_id)
            raise
        finally:
            if self.reader is not None and self.reader is not self.ctx.engine:
                self.reader.dispose()
        return self.finish()

    def run_batches(self, digest_ids: Sequence[int]) -> SendSummary:
        """Claim, compose, deliver and record only ``digest_ids`` (a queued batch task).

        No planning and no run row: the planner created the digests. Composing does not
        overlap delivery — one batch has nothing to overlap with. Ends with :meth:`finish`.
        """
        self.digest_ids = list(digest_ids)
        self.reader = None
        try:
            self._loop()
        except BaseException:
            self.summary.interrupted = True
            self.finish(crashed=True)
            raise
        return self.finish()

    def finish(self, *, crashed: bool = False) -> SendSummary:
        """Hand back what this run still holds and count what is left (end of any run)."""
        now = self.ctx.clock.now()
        with session_scope(self.ctx.engine) as session:
            # Whatever this run still holds goes back at once, not when the lease ends.
            outbox.release_worker(session, self.ctx.worker)
        with session_scope(self.ctx.engine) as session:
            prune_copies(session, now=now)  # View in browser: copies past keep_digests_days
        with session_scope(self.ctx.engine) as session:
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
            if self.ctx.stop.is_set():
                self.summary.interrupted = True

    def _claim(self, now: datetime) -> list[outbox.Claim]:
        with session_scope(self.ctx.engine) as session:
            return outbox.claim_batch(
                session,
                self.ctx.worker,
                now=now,
                limit=self.ctx.settings.newsletter.batch_size,
                lease=self.ctx.options.lease,
                subscriber_ids=self.scope,
                digest_ids=self.digest_ids,
            )

    def _rounds(self) -> None:
        """Batch after batch; the next batch is composed while this one is delivered."""
        smtp = self.ctx.settings.smtp
        strikes = 0
        ahead: Future[_Composed] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="compose") as composing:
            while not self.ctx.stop.is_set():
                if ahead is None:
                    now = self.ctx.clock.now()
                    claims = self._claim(now)
                    if not claims:
                        if not self._wait_for_retry(now):
                            return
                        continue
                    ahead = composing.submit(bound(self._compose_batch), claims)
                composed = ahead.result()
                ahead = None
                next_ids: list[int] = []
                if self.reader is not None and not self.ctx.stop.is_set():
                    claims = self._claim(self.ctx.clock.now())
                    if claims:
                        ahead = composing.submit(bound(self._compose_batch), claims)
                        next_ids = [c.id for c in claims]
                try:
                    self._settle(composed, next_ids)
                    strikes = 0
                except SmtpUnavailableError as e:
                    strikes += 1
                    if e.permanent or strikes >= smtp.max_attempts:
                        self.summary.error = f"SMTP server unavailable: {e}"
                        # Also in the summary's ``error``: a caller printing it drops this.
                        log.error(
                            "%s; the digests stay pending for the next run",
                            self.summary.error,
                            extra={"reported": True},
                        )
                        return
                    delay = backoff_seconds(
                        strikes, smtp.retry_base_seconds, smtp.retry_max_seconds, self.ctx.rng
                    )
                    log.warning("%s; trying again in %.1fs", e, delay)
                    self._sleep(delay)
                finally:
                    # Its drafts go now, not when the next batch has been waited for:
                    # at most two batches of messages are held (this one, the next).
                    del composed

    def _settle(self, composed: _Composed, next_ids: Sequence[int]) -> None:
        """Record the batch and deliver what is left to send."""
        to_send = self._record(composed)
        if to_send:
            self.delivery.deliver(to_send, also_held=next_ids)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and not self.ctx.stop.is_set():
            self.ctx.clock.sleep(seconds)

    def _wait_for_retry(self, now: datetime) -> bool:
        """Sleep until the next rescheduled digest is due; False when none is waiting."""
        if not self.ctx.options.wait_for_retries:
            return False
        with session_scope(self.ctx.engine) as session:
            at = outbox.next_retry_at(session, now=now, subscriber_ids=self.scope)
        if at is None:
            return False
        self._sleep(max(0.0, (at - now).total_seconds()))
        return not self.ctx.stop.is_set()

    # -- one batch -------------------------------------------------------------------------

    def _compose_isolated(self, session: Session, reqs: Sequence[DigestJob]) -> dict[int, Composed]:
        """Compose the batch; if that fails, each digest alone, so one bad one is isolated.

        A configuration or database error is the run's problem, not a digest's: raised.
        """
        try:
            return dict(self.compose(session, reqs))
        except (ConfigError, SQLAlchemyError):
            raise
        except Exception as e:
            if len(reqs) == 1:
                return {reqs[0].subscriber_id: _compose_failure(reqs[0], e)}
            log.warning("composing a batch failed (%s); composing one by one", e)
        out: dict[int, Composed] = {}
        for r in reqs:
            try:
                out.update(self.compose(session, [r]))
            except (ConfigError, SQLAlchemyError):
                raise
            except Exception as e:
                out[r.subscriber_id] = _compose_failure(r, e)
        return out

    def _compose_batch(self, claims: Sequence[outbox.Claim]) -> _Composed:
        """Read and compose one batch; writes nothing (may run beside a delivery)."""
        now = self.ctx.clock.now()
        with Session(self.reader or self.ctx.engine) as session:
            ids = [c.subscriber_id for c in claims]
            live = outbox_plan.deliverable_ids(session, ids)
            who = outbox_plan.recipients(session, ids)
            reqs = digest_jobs(session, claims, now, who)
            drafts = self._compose_isolated(session, [r for r in reqs if r.subscriber_id in live])
            session.rollback()
        return _Composed(claims, reqs, live, drafts, who, now)

    def _record(self, batch: _Composed) -> list[Item]:
        """Settle what will not be sent (skipped, failed); the rest, ready to send."""
        by_sub = {c.subscriber_id: c for c in batch.claims}
        to_send: list[Item] = []
        skipped: list[SkippedMark] = []
        with session_scope(self.ctx.engine) as session:
            for req in batch.jobs:
                claim = by_sub[req.subscriber_id]
                email = batch.who.get(req.subscriber_id, ("?", ""))[0]
                got = batch.drafts.get(req.subscriber_id)
                if req.subscriber_id not in batch.live:
                    # Unsubscribed or deactivated since the digest was planned.
                    skipped.append(SkippedMark(claim.id, None, batch.now))
                    self._count("skipped", email)
                elif isinstance(got, Draft):
                    to_send.append((claim, req, got))
                elif isinstance(got, ComposeFailed):
                    outbox.mark_failed(
                        session,
                        claim.id,
                        self.ctx.worker,
                        error=got.reason,
                        window_start=req.window_start,
                    )
                    self._count("failed", email, got.reason)
                else:
                    skipped.append(SkippedMark(claim.id, req.window_start, req.window_end))
                    self._count("skipped", email)
            mark_skipped_many(session, self.ctx.worker, skipped)
        return to_send

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
    clock = Clock(
        now=now or wallclock.now,
        sleep=sleep or (lambda seconds: _wait(stop, seconds)),
    )
    ctx = RunContext(
        engine=engine,
        settings=settings,
        sender=sender,
        options=options or SendOptions(),
        clock=clock,
        stop=stop,
        worker=worker or new_worker_id(),
        rng=rng or random.Random(),
    )
    run = SendRun(ctx, compose or Composer(settings, body_8bit=True), progress=progress)
    return run.run()


__all__ = [
    "ComposeFn",
    "DigestJob",
    "Draft",
    "Outcome",
    "Planned",
    "SendOptions",
    "SendProgress",
    "SendSummary",
    "send_due",
]
