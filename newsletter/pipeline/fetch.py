"""Fetch every enabled feed in parallel, store what is new, record each feed's health.

Network and parsing run in a thread pool (``fetch.workers``); storing happens in the
calling thread, one feed at a time in config order (one writer is all SQLite allows
anyway), and is retried when another process inserted the same paper first. Each feed's
errors are caught, logged and recorded on that feed, never fatal to the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from newsletter import clock as wallclock
from newsletter.config import FeedType, Settings
from newsletter.db import session_scope
from newsletter.db.entries import (
    FeedStatus,
    StoreResult,
    Validators,
    day_validators,
    record_day_validators,
    record_fetch,
    store_entries,
    sync_feeds,
)
from newsletter.db.runs import finish_run, start_run
from newsletter.errors import ConfigError, DatabaseError, FeedError
from newsletter.ingest import Download, FeedFetch, ParsedFeed, fetch_daily_papers, fetch_feed
from newsletter.pipeline.logs import bound, log_context

log = logging.getLogger(__name__)

# Marks a log record whose event is also a line of the returned FetchReport: a caller
# that prints the report (``newsletter fetch``) drops these so each event shows once.
IN_REPORT = {"reported": True}

STORE_ATTEMPTS = 3
GONE_MESSAGE = "HTTP 410 Gone: feed disabled (point its url in the config elsewhere to re-enable)"


@dataclass(frozen=True, slots=True)
class FeedReport:
    """How one feed fared in one run."""

    name: str
    url: str
    status: FeedStatus
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    http_status: int | None = None
    message: str | None = None  # the error, or the warning of a malformed feed
    moved_to: str | None = None  # new URL after a permanent redirect
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in ("error", "gone")


@dataclass(frozen=True, slots=True)
class FetchReport:
    """One fetch run: a report per feed, in config order."""

    feeds: tuple[FeedReport, ...]
    started_at: datetime
    finished_at: datetime
    run_id: int | None = None

    @property
    def new(self) -> int:
        return sum(f.new for f in self.feeds)

    @property
    def updated(self) -> int:
        return sum(f.updated for f in self.feeds)

    @property
    def unchanged(self) -> int:
        return sum(f.unchanged for f in self.feeds)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.feeds)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: stored as the run's summary and printed by ``fetch --json``."""
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "feeds": [asdict(f) for f in self.feeds],
            "totals": {
                "feeds": len(self.feeds),
                "new": self.new,
                "updated": self.updated,
                "unchanged": self.unchanged,
                "failed": self.failed,
            },
        }


class Progress(Protocol):
    """What the CLI's progress bar needs; the pipeline itself never prints."""

    def start(self, total: int) -> None: ...

    def advance(self, report: FeedReport) -> None: ...


@dataclass(frozen=True, slots=True)
class _Target:
    """A feed as the worker threads see it: plain values, no ORM object across threads."""

    id: int
    name: str
    url: str
    etag: str | None
    last_modified: str | None
    type: FeedType = "feed"
    days: int = 0
    day_validators: Mapping[str, Validators] = field(default_factory=dict)  # Daily Papers


def fetch_feeds(
    engine: Engine,
    settings: Settings,
    *,
    names: Sequence[str] = (),
    now: datetime | None = None,
    progress: Progress | None = None,
) -> FetchReport:
    """Fetch the enabled feeds, or exactly ``names`` (even disabled ones), and store them."""
    clock: Callable[[], datetime] = (lambda: now) if now else wallclock.now
    started = clock()
    configured = {f.name for f in settings.feeds}
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise ConfigError(
            f"no feed named {unknown[0]!r} (configured: {', '.join(sorted(configured)) or 'none'})",
            path=str(settings.config_path) if settings.config_path else None,
            key="--feed",
        )
    try:
        with session_scope(engine) as session:
            feeds = sync_feeds(session, settings.feeds)
            chosen = [f for name, f in feeds.items() if (name in names if names else f.enabled)]
            kinds = {c.name: c for c in settings.feeds}
            known = day_validators(
                session, [f.id for f in chosen if kinds[f.name].type == "hf-daily-papers"]
            )
            targets = [
                _Target(
                    f.id,
                    f.name,
                    f.url,
                    f.etag,
                    f.last_modified,
                    kinds[f.name].type,
                    kinds[f.name].days,
                    known.get(f.id, {}),
                )
                for f in chosen
            ]
            run_id = start_run(session, "fetch", now=started)
    except SQLAlchemyError as e:
        raise DatabaseError(f"cannot read the feeds from the database: {e}") from e
    if progress:
        progress.start(len(targets))
    reports: dict[str, FeedReport] = {}
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(settings.fetch.workers, len(targets))),
        thread_name_prefix="fetch",
    )
    try:
        with log_context(run_id=run_id):
            futures = [
                pool.submit(bound(_download, feed=t.name), settings, t, clock) for t in targets
            ]
        # Stored in config order as downloads complete: the counts, and which feed an
        # entry is credited to, do not depend on which server answered first.
        for fut in futures:
            got = fut.result()
            with log_context(run_id=run_id, feed=got.target.name):
                report = _store_one(engine, got)
            reports[report.name] = report
            if progress:
                progress.advance(report)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _finish(engine, run_id, reports, targets, started, clock(), interrupted=True)
        raise
    pool.shutdown()
    return _finish(engine, run_id, reports, targets, started, clock(), interrupted=False)


def _finish(
    engine: Engine,
    run_id: int,
    reports: dict[str, FeedReport],
    targets: Sequence[_Target],
    started: datetime,
    finished: datetime,
    *,
    interrupted: bool,
) -> FetchReport:
    report = FetchReport(
        feeds=tuple(reports[t.name] for t in targets if t.name in reports),
        started_at=started,
        finished_at=finished,
        run_id=run_id,
    )
    summary = report.as_dict()
    if interrupted:
        summary["interrupted"] = True
    status = "ok" if report.ok and not interrupted else "error"
    try:
        with session_scope(engine) as session:
            finish_run(session, run_id, status=status, summary=summary, now=finished)
    except SQLAlchemyError as e:
        if not interrupted:
            raise DatabaseError(f"cannot record the fetch run: {e}") from e
        log.exception("could not record the end of fetch run %d", run_id)
    return report


@dataclass(frozen=True, slots=True)
class _Downloaded:
    """A worker's result: the parsed feed, or the error that stopped it."""

    target: _Target
    now: datetime
    t0: float
    fetched: FeedFetch | None = None
    error: str | None = None
    http_status: int | None = None
    day_validators: Mapping[str, Validators] | None = None  # a Daily Papers feed's, to keep


def _download(settings: Settings, target: _Target, clock: Callable[[], datetime]) -> _Downloaded:
    """Fetch and parse one feed in a worker thread; never raises."""
    t0 = time.monotonic()
    now = clock()
    validators: Mapping[str, Validators] | None = None
    try:
        if target.type == "hf-daily-papers":
            fetched, validators = _daily_papers(settings, target, now)
        else:
            fetched = fetch_feed(
                target.url,
                settings.fetch,
                etag=target.etag,
                last_modified=target.last_modified,
                now=now,
            )
    except FeedError as e:
        return _Downloaded(target, now, t0, error=_bare(e), http_status=e.status)
    except Exception as e:  # a bug or an odd library error must not stop the others
        log.exception("feed %s: unexpected error while fetching", target.name)
        return _Downloaded(target, now, t0, error=f"unexpected error: {e!r}")
    return _Downloaded(target, now, t0, fetched=fetched, day_validators=validators)


def _daily_papers(
    settings: Settings, target: _Target, now: datetime
) -> tuple[FeedFetch, Mapping[str, Validators]]:
    """The listing days as one feed fetch, and each day's validators to keep.

    Lost days and skipped items are its warning. Each day is its own URL, sent the
    validators its last read gave: an unchanged day answers 304 (its stored upvotes are
    still the current ones) while the others are read and stored; all of them 304 is
    the feed's "not-modified".
    """
    got = fetch_daily_papers(
        target.url, settings.fetch, days=target.days, now=now, validators=target.day_validators
    )
    warning = got.warning
    if warning:
        log.warning("feed %s: %s", target.name, warning)
    dl = got.download
    status: Literal["ok", "warning", "not-modified"] = (
        "warning" if warning else "not-modified" if got.not_modified else "ok"
    )
    fetched = FeedFetch(
        download=Download(status="ok", http_status=dl.http_status, final_url=dl.final_url),
        parsed=ParsedFeed(entries=got.entries, version="hf-daily-papers"),
        warning=warning,
        status=status,
    )
    return fetched, got.validators


def _store_one(engine: Engine, got: _Downloaded) -> FeedReport:
    """Store one downloaded feed and record its health; every failure ends up on the feed."""
    target, fetched = got.target, got.fetched
    if fetched is None:
        return _record_error(engine, got, got.error or "unknown error", got.http_status)
    try:
        stats = _store(engine, target, fetched, got.now, got.day_validators)
    except Exception as e:
        log.exception("feed %s: could not store its entries", target.name)
        return _record_error(engine, got, f"could not store entries: {e}", None)
    dl = fetched.download
    if fetched.status == "gone":
        log.warning("feed %s: %s: %s", target.name, target.url, GONE_MESSAGE, extra=IN_REPORT)
    if dl.permanent_url:
        log.info("feed %s moved permanently to %s", target.name, dl.permanent_url)
    return FeedReport(
        name=target.name,
        url=target.url,
        status=fetched.status,
        new=stats.new,
        updated=stats.updated,
        unchanged=stats.unchanged,
        http_status=dl.http_status,
        message=GONE_MESSAGE if fetched.status == "gone" else fetched.warning,
        moved_to=dl.permanent_url,
        seconds=round(time.monotonic() - got.t0, 3),
    )


def _store(
    engine: Engine,
    target: _Target,
    fetched: FeedFetch,
    now: datetime,
    validators: Mapping[str, Validators] | None = None,
) -> StoreResult:
    """Store the entries, the feed's new state and its days' validators in one transaction."""
    dl = fetched.download
    status: Literal["ok", "warning", "not-modified", "gone"] = fetched.status
    attempt = 1
    while True:
        try:
            with session_scope(engine) as session:
                stats = store_entries(session, target.id, fetched.entries, now=now)
                record_fetch(
                    session,
                    target.id,
                    status=status,
                    now=now,
                    http_status=dl.http_status,
                    etag=dl.etag,
                    last_modified=dl.last_modified,
                    new_url=dl.permanent_url,
                    message=GONE_MESSAGE if status == "gone" else fetched.warning,
                )
                if validators is not None:
                    record_day_validators(session, target.id, validators, now=now)
            return stats
        except IntegrityError:
            # Another process stored the same paper between our read and our insert;
            # read again and the paper is found.
            if attempt >= STORE_ATTEMPTS:
                raise
            log.info("feed %s: concurrent insert, retrying (%d)", target.name, attempt)
            attempt += 1


def _record_error(
    engine: Engine, got: _Downloaded, message: str, http_status: int | None
) -> FeedReport:
    target = got.target
    log.warning("feed %s: %s: %s", target.name, target.url, message, extra=IN_REPORT)
    try:
        with session_scope(engine) as session:
            record_fetch(
                session,
                target.id,
                status="error",
                now=got.now,
                http_status=http_status,
                message=message,
            )
    except SQLAlchemyError:
        log.exception("feed %s: could not record its error", target.name)
    return FeedReport(
        name=target.name,
        url=target.url,
        status="error",
        http_status=http_status,
        message=message,
        seconds=round(time.monotonic() - got.t0, 3),
    )


def _bare(e: FeedError) -> str:
    """The error without its URL prefix: ``status`` shows the URL in its own column."""
    text = str(e)
    prefix = f"{e.url}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
