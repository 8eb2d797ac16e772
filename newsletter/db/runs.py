"""The ``runs`` table: one row per fetch or send, begun and finished, for ``status``.

A row left ``running`` is a run that crashed (or is still going: ``host`` and ``pid``
say which).

A fetch's row is also a fence for composing: entries are stamped ``first_seen_at`` when
their feed is downloaded, but become visible only when that feed's transaction commits,
seconds later. A send whose window ended in between would record a window that covers
entries it never saw. So a window never ends after the start of a fetch still in
progress (:func:`fetch_fence`); the fetch's row commits before any of its stamps.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.models import Run


def start_run(session: Session, kind: str, *, now: datetime) -> int:
    """Record that a run began (``status`` shows runs left ``running`` by a crash)."""
    run = Run(
        kind=kind,
        started_at=now,
        status="running",
        summary={},
        host=socket.gethostname()[:255],
        pid=os.getpid(),
    )
    session.add(run)
    session.flush()
    return run.id


def finish_run(
    session: Session, run_id: int, *, status: str, summary: Mapping[str, Any], now: datetime
) -> None:
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(status=status, summary=dict(summary), finished_at=now)
    )


def last_run(session: Session, kind: str) -> Run | None:
    return session.scalars(
        select(Run).where(Run.kind == kind).order_by(Run.started_at.desc(), Run.id.desc()).limit(1)
    ).first()


def recent_runs(session: Session, kind: str, *, status: str, limit: int = 10) -> list[Run]:
    """The latest runs of ``kind`` that ended ``status`` (failed batch tasks, say)."""
    return list(
        session.scalars(
            select(Run)
            .where(Run.kind == kind, Run.status == status)
            .order_by(Run.started_at.desc(), Run.id.desc())
            .limit(limit)
        )
    )


# A fetch row still ``running`` after this long is a crash, not a fetch: every feed has a
# wall-clock deadline (``[fetch] timeout_seconds``), so a live fetch ends long before.
FETCH_FENCE_MAX_AGE = timedelta(hours=1)


def fetch_fence(session: Session, *, now: datetime) -> datetime | None:
    """The start of the oldest fetch still storing entries, if one began before ``now``.

    Rows left ``running`` by a process of this host that is gone (``kill -9``) and rows
    older than :data:`FETCH_FENCE_MAX_AGE` do not count: their uncommitted entries were
    rolled back, so nothing they stamped can appear later.
    """
    rows = session.execute(
        select(Run.started_at, Run.host, Run.pid).where(
            Run.kind == "fetch",
            Run.status == "running",
            Run.started_at <= now,
            Run.started_at > now - FETCH_FENCE_MAX_AGE,
        )
    ).all()
    here = socket.gethostname()[:255]
    live = [
        started
        for started, host, pid in rows
        if not (host == here and pid is not None and not _alive(pid))
    ]
    return min(live) if live else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
