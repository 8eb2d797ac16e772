"""The batch task: one list of digest ids, run by :func:`~newsletter.pipeline.batch.run_batch`."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, Task
from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.db import connect
from newsletter.delivery import make_sender
from newsletter.pipeline.batch import run_batch

log = logging.getLogger(__name__)

TASK_SEND_BATCH = "newsletter.send_batch"

_engines: dict[int, Engine] = {}
_lock = threading.Lock()


def engine_for(settings: Settings) -> Engine:
    """One engine per worker process (a prefork child must not share its parent's pool)."""
    pid = os.getpid()
    with _lock:
        if pid not in _engines:
            _engines[pid] = connect(settings.database.url, echo=settings.database.echo)
        return _engines[pid]


def register(app: Celery) -> None:
    """Add the batch task to ``app`` (whose conf carries the settings and the lease)."""

    @app.task(name=TASK_SEND_BATCH, bind=True)  # type: ignore[untyped-decorator]
    def send_batch(self: Task, digest_ids: list[int]) -> dict[str, Any]:
        settings: Settings = self.app.conf.newsletter_settings
        engine = engine_for(settings)
        with make_sender(settings) as sender:
            summary = run_batch(
                engine, settings, sender, digest_ids, lease=self.app.conf.newsletter_lease
            )
        log.info(
            "batch of %d: sent %d, skipped %d, failed %d",
            len(digest_ids),
            summary.sent,
            summary.skipped,
            summary.failed,
        )
        if summary.error:  # the SMTP server was unreachable: the digests stay pending
            raise RuntimeError(summary.error)
        return summary.as_dict()
