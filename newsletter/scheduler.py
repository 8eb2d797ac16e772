"""``newsletter run``: APScheduler wiring only — the work itself is in ``pipeline``.

Two jobs on a ``BlockingScheduler``: fetch every ``fetch_every_minutes``, and every
minute send what is due. Both coalesce missed runs and never overlap themselves. At
start-up it fetches, then sends at once, so a process started after downtime catches
up immediately (the digests of missed days are merged, see ``pipeline.send``).

Only the holder of the ``scheduler`` lease (a row in ``leases``, renewed every 30 s)
does anything: a second ``newsletter run`` on the same database stands by, and takes
over when the first stops or dies. SIGTERM/SIGINT stop cleanly: the message in flight
is finished and recorded, the rest stays pending.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from newsletter import clock
from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.db.leases import SCHEDULER_LEASE, acquire, holder_of, new_worker_id, release
from newsletter.delivery import Sender, make_sender
from newsletter.pipeline.fetch import FetchReport, fetch_feeds
from newsletter.pipeline.jobs import ComposeFn
from newsletter.pipeline.send import SendOptions, SendSummary, send_due

log = logging.getLogger(__name__)

# A round's summary line; ``run --once`` prints the summary itself and drops these.
ROUND_SUMMARY = {"reported": True}

LEASE_TTL = timedelta(minutes=2)
LEASE_RENEW_SECONDS = 30
SEND_EVERY_SECONDS = 60


def write_metrics(settings: Settings, engine: Engine) -> None:
    """The node_exporter textfile, when ``[metrics] textfile`` names one (else nothing)."""
    path = settings.metrics.textfile
    if path is None:
        return
    from newsletter.pipeline.metrics import QueueDepth, write_textfile

    probe: QueueDepth | None = None
    if settings.queue.enabled:
        from newsletter.workers.app import make_app, queue_depth

        probe = lambda: queue_depth(make_app(settings))  # noqa: E731
    write_textfile(path, engine, queue_depth=probe)


class _InSummary(logging.Filter):
    """Drops the send pipeline's lines marked ``reported``: their text is the summary's
    ``error``, which the round's own line carries. One event, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "reported", False)


@contextmanager
def _said_in_summary() -> Iterator[None]:
    # Rounds never overlap (max_instances=1): nothing else logs there meanwhile.
    logger, only = logging.getLogger("newsletter.pipeline.send"), _InSummary()
    logger.addFilter(only)
    try:
        yield
    finally:
        logger.removeFilter(only)


class _DropOverlapWarnings(logging.Filter):
    """A send round longer than a minute makes APScheduler warn every minute that the
    next one was skipped — which is the point of ``max_instances=1``, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


@dataclass
class RoundResult:
    """What one ``run --once`` did, for the CLI's exit code."""

    fetch: FetchReport | None
    send: SendSummary | None
    standby: bool = False


class DigestScheduler:
    """The fetch and send rounds, the lease that guards them, and clean shutdown."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        sender_factory: Callable[[Settings], Sender] = make_sender,
        compose: ComposeFn | None = None,
        clock: Callable[[], datetime] = clock.now,
        worker: str | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.sender_factory = sender_factory
        self.compose = compose
        self.clock = clock
        self.worker = worker or new_worker_id()
        self.stop_event = threading.Event()
        self._holding = False
        self._lease_lock = threading.Lock()
        self._busy = threading.Condition()
        self._running = 0
        self.scheduler: BlockingScheduler | None = None

    # -- the lease -------------------------------------------------------------------------

    def hold_lease(self) -> bool:
        """Take or renew the scheduler lease; log only when that changes."""
        with self._lease_lock:
            now = self.clock()
            with session_scope(self.engine) as session:
                held = acquire(session, SCHEDULER_LEASE, self.worker, now=now, ttl=LEASE_TTL)
                other = None if held else holder_of(session, SCHEDULER_LEASE, now=now)
            if held and not self._holding:
                log.info("scheduler lease taken by %s", self.worker)
            elif not held and self._holding:
                log.warning("scheduler lease lost to %s; standing by", other and other.holder)
            elif not held and self._holding is False and other is not None:
                log.debug("standing by: %s holds the scheduler lease", other.holder)
            self._holding = held
            return held

    def release_lease(self) -> None:
        with self._lease_lock, session_scope(self.engine) as session:
            release(session, SCHEDULER_LEASE, self.worker)
            self._holding = False

    # -- the rounds ------------------------------------------------------------------------

    @contextmanager
    def _job(self) -> Iterator[None]:
        with self._busy:
            self._running += 1
        try:
            yield
        finally:
            with self._busy:
                self._running -= 1
                self._busy.notify_all()

    def fetch_round(self) -> FetchReport | None:
        """Fetch every feed once; one log line. None when standing by or stopping."""
        if self.stop_event.is_set() or not self.hold_lease():
            return None
        try:
            return self._fetch()
        finally:
            write_metrics(self.settings, self.engine)

    def _fetch(self) -> FetchReport | None:
        with self._job():
            t0 = time.monotonic()
            try:
                report = fetch_feeds(self.engine, self.settings)
            except Exception:
                log.exception("fetch round failed")
                return None
            log.info(
                "fetch: %d feeds, %d new, %d updated, %d failed (%.1fs)",
                len(report.feeds),
                report.new,
                report.updated,
                report.failed,
                time.monotonic() - t0,
                extra={**ROUND_SUMMARY, "run_id": report.run_id},
            )
            return report

    def send_round(self) -> SendSummary | None:
        """Send what is due; one log line (failures are logged one by one as they happen)."""
        if self.stop_event.is_set() or not self.hold_lease():
            return None
        try:
            if self.settings.queue.enabled:
                self.enqueue_round()
                return None
            return self._send()
        finally:
            write_metrics(self.settings, self.engine)

    def _send(self) -> SendSummary | None:
        with self._job(), _said_in_summary():
            t0 = time.monotonic()
            try:
                with self.sender_factory(self.settings) as sender:
                    summary = send_due(
                        self.engine,
                        self.settings,
                        sender,
                        compose=self.compose,
                        options=SendOptions(),
                        now=self.clock,
                        stop=self.stop_event,
                        worker=self.worker,
                    )
            except Exception:
                log.exception("send round failed")
                return None
            level = (
                logging.ERROR if summary.error else logging.INFO if summary.ok else logging.WARNING
            )
            if summary.sent or summary.failed or summary.retried or summary.error:
                log.log(
                    level,
                    "send: sent %d, skipped %d (nothing new), failed %d, retried %d%s (%.1fs)",
                    summary.sent,
                    summary.skipped,
                    summary.failed,
                    summary.retried,
                    f"; {summary.error}" if summary.error else "",
                    time.monotonic() - t0,
                    extra={**ROUND_SUMMARY, "run_id": summary.run_id},
                )
            else:
                log.debug("send: nothing due")
            return summary

    def enqueue_round(self) -> int:
        """Queue mode: plan what is due and queue it for the workers; digests queued."""
        from newsletter.pipeline.batch import plan_batches
        from newsletter.workers.app import enqueue, make_app

        with self._job():
            try:
                batches = plan_batches(self.engine, self.settings, now=self.clock())
                if batches:
                    enqueue(make_app(self.settings), batches)
            except Exception:
                log.exception("send round (queue) failed")
                return 0
            n = sum(len(b) for b in batches)
            if n:
                log.info("send: queued %d digest(s) in %d batch(es)", n, len(batches))
            return n

    def once(self) -> RoundResult:
        """One fetch and one send round (``run --once``, for cron and systemd timers)."""
        if not self.hold_lease():
            return RoundResult(None, None, standby=True)
        try:
            fetch = self.fetch_round()
            send = self.send_round()
        finally:
            self.release_lease()
        return RoundResult(fetch, send)

    # -- the long-running process ----------------------------------------------------------

    def build(self) -> BlockingScheduler:
        """The APScheduler instance with its three jobs (not started)."""
        # APScheduler keeps the real time, whatever NEWSLETTER_NOW says: a simulated
        # "now" here would be a run time long past, run again at once (a second fetch).
        now = datetime.now(UTC)
        scheduler = BlockingScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        fetch_every = self.settings.newsletter.fetch_every_minutes
        scheduler.add_job(
            self.fetch_round,
            IntervalTrigger(minutes=fetch_every, timezone=UTC),
            id="fetch",
            name="fetch feeds",
            # run_forever has just fetched.
            next_run_time=now + timedelta(minutes=fetch_every),
            misfire_grace_time=fetch_every * 60,
            coalesce=True,
            max_instances=1,
        )
        scheduler.add_job(
            self.send_round,
            IntervalTrigger(seconds=SEND_EVERY_SECONDS, timezone=UTC),
            id="send",
            name="send due digests",
            next_run_time=now,  # catch up at once after downtime
            misfire_grace_time=SEND_EVERY_SECONDS,
            coalesce=True,
            max_instances=1,
        )
        scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=LEASE_RENEW_SECONDS, timezone=UTC),
            id="lease",
            name="renew the scheduler lease",
            misfire_grace_time=LEASE_RENEW_SECONDS,
            coalesce=True,
            max_instances=1,
        )
        return scheduler

    def _tick(self) -> None:
        """Renew the lease; also closes the window where a stop came before ``start``."""
        if self.stop_event.is_set():
            if self.scheduler is not None and self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            return
        self.hold_lease()

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Stop after the messages in flight (signal handler, or from another thread)."""
        if self.stop_event.is_set():
            log.warning("already stopping; waiting for the message in flight")
            return
        name = signal.Signals(signum).name if signum else "request"
        log.info("%s: stopping after the message in flight", name)
        self.stop_event.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def run_forever(self, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or ``request_stop``), then wait for the jobs in flight."""
        logging.getLogger("apscheduler.scheduler").addFilter(_DropOverlapWarnings())
        self.scheduler = self.build()
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        log.info(
            "newsletter run: fetch every %d min, send due digests every minute (%s)",
            self.settings.newsletter.fetch_every_minutes,
            self.worker,
        )
        try:
            # Fetch first, so a process started after downtime sends fresh news.
            self.fetch_round()
            if not self.stop_event.is_set():
                self.scheduler.start()
        finally:
            with self._busy:
                self._busy.wait_for(lambda: self._running == 0)
            try:
                self.release_lease()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        log.info("newsletter run: stopped")
