"""The batch task: one list of digest ids, run by :func:`~newsletter.pipeline.batch.run_batch`."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from newsletter.config import Settings
from newsletter.db import connect, session_scope
from newsletter.db.runs import finish_run, start_run
from newsletter.delivery import make_sender
from newsletter.pipeline.batch import run_batch
from newsletter.pipeline.compose import Composer

log = logging.getLogger(__name__)

TASK_SEND_BATCH = "newsletter.send_batch"

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def engine_for(settings: Settings) -> Engine:
    """One engine per worker process and database (a prefork child must not share its
    parent's pool)."""
    key = (os.getpid(), settings.database.url)
    with _lock:
        if key not in _engines:
            _engines[key] = connect(settings.database.url, echo=settings.database.echo)
        return _engines[key]


_composers: dict[tuple[int, int], tuple[Settings, Composer]] = {}


def composer_for(settings: Settings) -> Composer:
    """One composer per worker process and configuration, reused by every task.

    It keeps the matching index of the send's window (about a second to build per
    thousand entries) and the compiled template shapes: a fresh one per task rebuilt
    them for every batch, which made a worker several times slower than a local send.
    A prefork child runs one task at a time, so nothing composes with it concurrently.
    """
    key = (os.getpid(), id(settings))
    with _lock:
        known = _composers.get(key)
        if known is None or known[0] is not settings:
            known = _composers[key] = (settings, Composer(settings, body_8bit=True))
        return known[1]


def _record_failure(engine: Engine, task_id: str | None, ids: list[int], reason: str) -> None:
    """A failed task, in the ``runs`` table for ``status`` (a broker keeps no history)."""
    now = datetime.now(UTC)
    try:
        with session_scope(engine) as session:
            run = start_run(session, "batch", now=now)
            summary = {"task": task_id, "digests": len(ids), "first": ids[:1], "error": reason}
            finish_run(session, run, status="error", summary=summary, now=now)
    except SQLAlchemyError:  # the database may be the reason: the worker's log has it
        log.exception("could not record the failure of task %s", task_id)


def send_batch(self: Task, digest_ids: list[int]) -> dict[str, Any]:
    """The batch task: whatever of ``digest_ids`` is still claimable, sent once."""
    settings: Settings = self.app.conf.newsletter_settings
    engine = engine_for(settings)
    try:
        with make_sender(settings) as sender:
            summary = run_batch(
                engine,
                settings,
                sender,
                digest_ids,
                compose=composer_for(settings),
                lease=self.app.conf.newsletter_lease,
            )
    except Exception as e:
        _record_failure(engine, self.request.id, digest_ids, f"{type(e).__name__}: {e}")
        raise
    log.info(
        "batch of %d: sent %d, skipped %d, failed %d",
        len(digest_ids),
        summary.sent,
        summary.skipped,
        summary.failed,
    )
    if summary.error:  # the SMTP server was unreachable: the digests stay pending
        _record_failure(engine, self.request.id, digest_ids, summary.error)
        raise RuntimeError(summary.error)
    return summary.as_dict()


def register(app: Celery) -> None:
    """Add the batch task to ``app`` (whose conf carries the settings and the lease).

    One module-level function for every app: the task reads its settings from the app
    it is bound to, so two apps in one process (tests) never mix them up.
    """
    app.task(name=TASK_SEND_BATCH, bind=True)(send_batch)
