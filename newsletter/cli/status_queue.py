"""The ``queue`` section of ``newsletter status``: the broker's depth, the live workers
(Celery's inspect), which worker holds which digests, and the failed batch tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from newsletter.cli.context import AppContext
from newsletter.cli.status import Section, iso, status_command, status_section, when
from newsletter.db.outbox.queued import leases_by_holder
from newsletter.db.runs import recent_runs


@status_section
def queue_section(app: AppContext, session: Session, now: datetime) -> Section:
    if not app.settings.queue.enabled:
        return Section("queue", None, lambda _console: None)
    from newsletter.workers.app import live_workers, make_app, queue_depth

    celery = make_app(app.settings)
    depth = queue_depth(celery)
    workers = live_workers(celery)
    leases = leases_by_holder(session, now=now)
    failed = recent_runs(session, "batch", status="error", limit=10)
    data: dict[str, Any] = {
        "broker": app.settings.queue.broker_url.rpartition("@")[2],
        "depth": depth,
        "workers": workers,
        "leases": [{"holder": h, "pending": p, "sending": s} for h, p, s in leases],
        "failed_tasks": [
            {"at": iso(r.started_at), **{k: r.summary.get(k) for k in ("task", "digests", "error")}}
            for r in failed
        ],
    }

    def render(console: Console) -> None:
        waiting = "unknown (broker unreachable)" if depth is None else f"{depth} task(s) waiting"
        console.print(f"Queue {data['broker']}: {waiting}")
        if workers:
            for name, running in workers.items():
                console.print(f"  worker {name}: {running} task(s) running")
        else:
            console.print("  no worker answered (start one with `newsletter worker`)")
        if leases:
            table = Table(title="Digests leased by worker", title_justify="left")
            for col in ("holder (host:pid:run)", "pending", "sending"):
                table.add_column(col, overflow="fold")
            for h, p, s in leases:
                table.add_row(h, str(p), str(s))
            console.print(table)
        if failed:
            table = Table(title="Failed batch tasks", title_justify="left")
            for col in ("when", "task", "digests", "reason"):
                table.add_column(col, overflow="fold")
            for r in failed:
                info = r.summary
                table.add_row(
                    when(r.started_at, now),
                    str(info.get("task")),
                    str(info.get("digests")),
                    str(info.get("error")),
                )
            console.print(table)

    return Section("queue", data, render)


# ``status`` is loaded through this module, so its queue section is always registered.
__all__ = ["status_command"]
