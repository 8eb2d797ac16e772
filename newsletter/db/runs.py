"""The ``runs`` table: one row per fetch or send, begun and finished, for ``status``.

A row left ``running`` is a run that crashed (or is still going: ``host`` and ``pid``
say which).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import datetime
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
