"""Who is working: worker identities, and named leases in the ``leases`` table.

A lease is a row ``(name, holder, expires_at)``; taking it is one conditional write, so
it works the same on SQLite and PostgreSQL. A holder on this host whose process is gone
(killed with ``kill -9``) loses its leases at once instead of when they expire, which
lets a restarted process resume without waiting.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from newsletter.db.core import dialect_insert
from newsletter.models import Lease

SCHEDULER_LEASE = "scheduler"


def new_worker_id() -> str:
    """``host:pid:random``: unique per process run, and says where to look for it."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) holds nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def holder_is_dead(holder: str | None) -> bool:
    """True only when ``holder`` is certainly gone: a process of this host that no longer runs.

    Anything else (another host, an unparsable id) is presumed alive until its lease
    expires — erring that way can only delay work, never duplicate it.
    """
    if not holder:
        return False
    host, sep, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if not sep or host != socket.gethostname()[:60] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)


def acquire(session: Session, name: str, holder: str, *, now: datetime, ttl: timedelta) -> bool:
    """Take or renew lease ``name`` for ``holder``; False if someone else holds it."""
    until = now + ttl
    current = session.scalar(select(Lease).where(Lease.name == name).with_for_update())
    if current is None:
        # Another process may insert it between our read and write: ON CONFLICT loses
        # quietly instead of failing the transaction.
        stmt = (
            dialect_insert(session, Lease)
            .values(name=name, holder=holder, expires_at=until)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Lease.name)
        )
        return session.execute(stmt).first() is not None
    free = current.holder == holder or current.expires_at <= now or holder_is_dead(current.holder)
    if not free:
        return False
    taken = session.execute(
        update(Lease)
        .where(
            Lease.name == name,
            Lease.holder == current.holder,
            Lease.expires_at == current.expires_at,
        )
        .values(holder=holder, expires_at=until)
        .returning(Lease.name)
    )
    return taken.first() is not None


def release(session: Session, name: str, holder: str) -> None:
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def holder_of(session: Session, name: str, *, now: datetime) -> Lease | None:
    """The live lease ``name`` (None when free, expired or held by a dead process)."""
    lease = session.scalar(select(Lease).where(Lease.name == name))
    if lease is None or lease.expires_at <= now or holder_is_dead(lease.holder):
        return None
    return lease
