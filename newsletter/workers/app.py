"""The Celery app, built from ``[queue]``: one per process, never global.

Exactly-once does not rest on the broker: the outbox does. The broker settings only make
sure work is not lost — late acknowledgement (a task is acked after it ran), a task whose
worker child died is put back (``reject_on_worker_lost``), one task prefetched at a time,
and on Redis an unacked task comes back after ``visibility_timeout``, which must outlast
the digest lease so the redelivered task finds the dead worker's claims expired.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.workers.tasks import TASK_SEND_BATCH, register


def make_app(settings: Settings) -> Celery:
    """The app of ``[queue]`` (validated with the settings: PostgreSQL, timeout > lease)."""
    q = settings.queue
    if not q.enabled:
        raise ConfigError("no [queue] broker_url: workers need a broker", key="queue.broker_url")
    app = Celery("newsletter", broker=q.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_default_queue=q.queue,
        task_soft_time_limit=q.task_soft_time_limit,
        task_time_limit=q.task_time_limit,
        broker_transport_options={"visibility_timeout": q.visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    app.conf.newsletter_settings = settings
    app.conf.newsletter_lease = timedelta(seconds=q.lease_seconds)
    register(app)
    return app


def enqueue(app: Celery, batches: list[list[int]]) -> list[str]:
    """One task per batch; the ids of the tasks."""
    ids: list[str] = []
    with app.producer_or_acquire() as producer:
        for batch in batches:
            r = app.send_task(TASK_SEND_BATCH, args=[batch], producer=producer, retry=True)
            ids.append(r.id)
    return ids


def queue_depth(app: Celery) -> int | None:
    """Tasks waiting in the queue (None when the broker cannot be asked)."""
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            try:
                ch: Any = conn.default_channel
                declared = ch.queue_declare(app.conf.task_default_queue, passive=True)
                return int(declared.message_count)
            except Exception:  # reachable, but no such queue (Redis drops empty ones): 0
                return 0
    except Exception:  # the broker cannot be reached
        return None


def live_workers(app: Celery, timeout: float = 1.0) -> dict[str, int]:
    """Each worker node that answers, with the number of tasks it is running now."""
    try:
        active = app.control.inspect(timeout=timeout).active() or {}
    except Exception:  # the broker is down: nobody can be asked
        return {}
    return {name: len(tasks or []) for name, tasks in sorted(active.items())}
