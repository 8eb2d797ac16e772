"""A send split into named batches, for queued workers: plan them here, run one anywhere.

``plan_batches`` does the planning half of :func:`~newsletter.pipeline.send.send_due`
(create the due digests) and cuts the claimable ones into lists of ids; ``run_batch``
runs the other half — claim, compose, deliver, record, the same :class:`SendRun` code —
restricted to one list. A task that names digests already claimed, sent or settled
claims nothing and does nothing; a batch whose worker was killed is claimable again
once its lease ends (at once on the same host, whose dead pids are recognised).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.db.leases import new_worker_id
from newsletter.db.outbox.queued import claimable_ids
from newsletter.delivery import Sender
from newsletter.pipeline.compose import Composer
from newsletter.pipeline.context import Clock, RunContext
from newsletter.pipeline.jobs import ComposeFn
from newsletter.pipeline.send import SendRun
from newsletter.pipeline.send_report import SendOptions, SendSummary


def _now() -> datetime:
    return datetime.now(UTC)


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)  # a stop request (soft time limit, warm shutdown) cuts it short


def plan_batches(
    engine: Engine,
    settings: Settings,
    options: SendOptions | None = None,
    *,
    size: int | None = None,
    now: datetime | None = None,
) -> list[list[int]]:
    """Create the due digests and return the claimable ones in batches of ``size`` ids."""
    options = options or SendOptions()
    at = now or _now()
    stop = threading.Event()
    ctx = RunContext(
        engine=engine,
        settings=settings,
        sender=None,  # type: ignore[arg-type]  # planning sends nothing
        options=options,
        clock=Clock(now=lambda: at, sleep=lambda _s: None),
        stop=stop,
        worker=new_worker_id(),
        rng=random.Random(),
    )
    run = SendRun(ctx, Composer(settings, body_8bit=True), progress=None)
    with session_scope(engine) as session:
        run.plan(session, at)
    with session_scope(engine) as session:
        ids = claimable_ids(session, now=at, subscriber_ids=run.scope)
    n = size or settings.queue.batch_size
    return [ids[i : i + n] for i in range(0, len(ids), n)]


def run_batch(
    engine: Engine,
    settings: Settings,
    sender: Sender,
    digest_ids: Sequence[int],
    *,
    compose: ComposeFn | None = None,
    lease: timedelta = timedelta(minutes=5),
    stop: threading.Event | None = None,
    worker: str | None = None,
) -> SendSummary:
    """Claim, compose, deliver and record those of ``digest_ids`` still claimable.

    Temporary failures go back to ``pending`` with their backoff and are not waited
    for: the next planning names them again.
    """
    stop = stop or threading.Event()
    ctx = RunContext(
        engine=engine,
        settings=settings,
        sender=sender,
        options=SendOptions(wait_for_retries=False, lease=lease),
        clock=Clock(now=_now, sleep=lambda seconds: _wait(stop, seconds)),
        stop=stop,
        worker=worker or new_worker_id(),
        rng=random.Random(),
    )
    run = SendRun(ctx, compose or Composer(settings, body_8bit=True), progress=None)
    return run.run_batches(digest_ids)


__all__ = ["plan_batches", "run_batch"]
