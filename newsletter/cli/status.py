"""``newsletter status``: what the operator checks, built from independent sections.

Each section is a function ``(app, session) -> Section`` registered with
:func:`status_section`; a later area (the outbox, say) adds its own from its command
module without touching this one. A section carries JSON-ready data for ``--json`` and
a renderer for the terminal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.cli.context import AppContext, pass_app
from newsletter.db import session_scope
from newsletter.db.entries import entry_counts, entry_totals, last_run, list_feeds
from newsletter.errors import DatabaseError


@dataclass(frozen=True, slots=True)
class Section:
    key: str  # top-level key in ``status --json``
    data: Any  # JSON-serialisable (datetimes as ISO strings)
    render: Callable[[Console], None]


SectionBuilder = Callable[[AppContext, Session, datetime], Section]
SECTIONS: list[SectionBuilder] = []


def status_section(builder: SectionBuilder) -> SectionBuilder:
    """Register a section; they are shown in registration order."""
    SECTIONS.append(builder)
    return builder


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def when(value: datetime | None, now: datetime) -> str:
    """``2026-01-09 07:00 UTC (3h ago)``: absolute for logs, relative for people."""
    if value is None:
        return "never"
    secs = max(0, int((now - value).total_seconds()))
    if secs < 60:
        ago = f"{secs}s"
    elif secs < 3600:
        ago = f"{secs // 60}m"
    elif secs < 86400 * 2:
        ago = f"{secs // 3600}h"
    else:
        ago = f"{secs // 86400}d"
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({ago} ago)"


def _short_url(url: str) -> str:
    """Local paths relative to the working directory, when that is shorter."""
    if url.startswith(("http://", "https://")):
        return url
    try:
        rel = os.path.relpath(url)
    except ValueError:
        return url
    return rel if len(rel) < len(url) else url


@status_section
def feeds_section(app: AppContext, session: Session, now: datetime) -> Section:
    feeds = {f.name: f for f in list_feeds(session)}
    counts = entry_counts(session)
    configured = {f.name: f for f in app.settings.feeds}
    rows: list[dict[str, Any]] = []
    for name in [*configured, *sorted(set(feeds) - set(configured))]:
        f = feeds.get(name)
        cfg = configured.get(name)
        rows.append(
            {
                "name": name,
                "url": f.url if f else cfg.url if cfg else "",
                "configured": cfg is not None,
                "enabled": f.enabled if f else bool(cfg and cfg.enabled),
                "last_status": f.last_status if f else None,
                "last_http_status": f.last_http_status if f else None,
                "last_fetched_at": iso(f.last_fetched_at) if f else None,
                "last_success_at": iso(f.last_success_at) if f else None,
                "consecutive_errors": f.consecutive_errors if f else 0,
                "last_error": f.last_error if f else None,
                "entries": counts.get(f.id, 0) if f else 0,
            }
        )
    fetched = {name: f.last_fetched_at for name, f in feeds.items()}

    def render(console: Console) -> None:
        if not rows:
            console.print("Feeds: none configured")
            return
        table = Table(title="Feeds", title_justify="left", expand=False)
        for col, kw in (
            ("name", {"overflow": "fold"}),
            ("url", {"overflow": "fold"}),
            ("enabled", {}),
            ("last status", {}),
            ("last fetch", {}),
            ("errors", {"justify": "right"}),
            ("last error", {"overflow": "fold", "max_width": 50}),
            ("entries", {"justify": "right"}),
        ):
            table.add_column(col, **kw)
        for r in rows:
            status = r["last_status"] or "never fetched"
            style = {"error": "red", "gone": "red", "warning": "yellow"}.get(status, "")
            enabled = "yes" if r["enabled"] else "no"
            if not r["configured"]:
                enabled += " (not in config)"
            table.add_row(
                r["name"],
                _short_url(r["url"]),
                enabled,
                f"[{style}]{status}[/]" if style else status,
                when(fetched.get(r["name"]), now),
                str(r["consecutive_errors"]),
                r["last_error"] or "",
                str(r["entries"]),
            )
        console.print(table)

    return Section("feeds", rows, render)


@status_section
def entries_section(app: AppContext, session: Session, now: datetime) -> Section:
    total, newest = entry_totals(session)
    run = last_run(session, "fetch")
    data: dict[str, Any] = {
        "total": total,
        "newest_first_seen_at": iso(newest),
        "last_fetch": None,
    }
    if run is not None:
        data["last_fetch"] = {
            "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at),
            "status": run.status,
            "totals": (run.summary or {}).get("totals"),
        }

    def render(console: Console) -> None:
        console.print(f"Entries: {total} (newest first seen {when(newest, now)})")
        if run is None:
            console.print("Last fetch: never (run `newsletter fetch`)")
            return
        totals = (run.summary or {}).get("totals") or {}
        status = run.status
        if status == "running":
            status = "running, or interrupted without recording its end"
        detail = ""
        if totals:
            detail = (
                f": {totals.get('feeds', 0)} feeds, {totals.get('new', 0)} new, "
                f"{totals.get('updated', 0)} updated, {totals.get('unchanged', 0)} unchanged, "
                f"{totals.get('failed', 0)} failed"
            )
        console.print(f"Last fetch: {when(run.started_at, now)}, {status}{detail}")

    return Section("entries", data, render)


def _console() -> Console:
    # In a pipe rich assumes 80 columns, which folds every URL; logs can afford more.
    interactive = os.isatty(1)
    return Console(width=None if interactive else 200, soft_wrap=False)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_app
def status_command(app: AppContext, as_json: bool) -> None:
    """Show feed health, entry counts and the last runs."""
    now = datetime.now(UTC)
    try:
        with session_scope(app.engine) as session:
            sections = [build(app, session, now) for build in SECTIONS]
    except SQLAlchemyError as e:
        raise DatabaseError(f"cannot read the status from the database: {e}") from e
    if as_json:
        click.echo(json.dumps({s.key: s.data for s in sections}, indent=2))
        return
    console = _console()
    for i, s in enumerate(sections):
        if i:
            console.print()
        s.render(console)


__all__ = [
    "SECTIONS",
    "Section",
    "SectionBuilder",
    "iso",
    "status_command",
    "status_section",
    "when",
]
