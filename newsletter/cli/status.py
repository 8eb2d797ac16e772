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

from newsletter import clock
from newsletter.cli.context import AppContext, pass_app
from newsletter.db import outbox, session_scope
from newsletter.db.entries import entry_counts, entry_totals, list_feeds
from newsletter.db.outbox import admin as outbox_admin
from newsletter.db.runs import last_run
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
    now = clock.now()
    try:
        with session_scope(app.reader) as session:
            sections = [build(app, session, now) for build in SECTIONS]
    except SQLAlchemyError as e:
        raise DatabaseError(f"cannot read the status from the database: {e}") from e
    simulated = clock.simulated()
    if as_json:
        data: dict[str, Any] = {s.key: s.data for s in sections}
        data["clock"] = {"now": iso(now), "simulated": simulated}
        click.echo(json.dumps(data, indent=2))
        return
    console = _console()
    if simulated is not None:
        console.print(
            f"[bold red]SIMULATED CLOCK[/]: {clock.ENV}={simulated} "
            f"(now {now:%Y-%m-%d %H:%M} UTC); unset it for real sends",
            highlight=False,
        )
    for i, s in enumerate(sections):
        if i:
            console.print()
        s.render(console)


def settle_hint(d: outbox_admin.DigestInfo) -> str:
    return f"newsletter resend {d.id} --mark-sent | --send-again"


def _digest_json(d: outbox_admin.DigestInfo) -> dict[str, Any]:
    return {
        "id": d.id,
        "recipient": d.email,
        "period": d.period,
        "status": d.status,
        "subject": d.subject,
        "entries": d.n_entries,
        "attempts": d.attempts,
        "error": d.error,
        "message_id": d.message_id,
        "claimed_by": d.claimed_by,
        "in_flight": d.in_flight,
        "created_at": iso(d.created_at),
        "resend": None if d.in_flight else settle_hint(d),
    }


@status_section
def outbox_section(app: AppContext, session: Session, now: datetime) -> Section:
    counts = outbox_admin.counts(session)
    run = last_run(session, "send")
    failures = outbox_admin.recent_failures(session, limit=10)
    sending = outbox_admin.ambiguous(session, now=now)
    retries, next_retry = outbox_admin.retry_backlog(session)
    data: dict[str, Any] = {
        "counts": counts,
        "last_send": None,
        "retrying": {"count": retries, "next_at": iso(next_retry)},
        "failures": [_digest_json(d) for d in failures],
        "sending": [_digest_json(d) for d in sending],
    }
    if run is not None:
        data["last_send"] = {
            "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at),
            "status": run.status,
            "summary": run.summary,
        }

    def render(console: Console) -> None:
        console.print(
            "Outbox: "
            + ", ".join(f"{counts[s]} {s}" for s in outbox.STATES)
            + f" (delivery: {app.settings.newsletter.delivery})"
        )
        if run is None:
            console.print("Last send: never (run `newsletter send`)")
        else:
            sm = run.summary or {}
            status = run.status
            if status == "running":
                status = "running, or interrupted without recording its end"
            console.print(
                f"Last send: {when(run.started_at, now)}, {status}: sent {sm.get('sent', 0)}, "
                f"skipped {sm.get('skipped', 0)}, failed {sm.get('failed', 0)}, "
                f"retried {sm.get('retried', 0)}" + (f"; {sm['error']}" if sm.get("error") else "")
            )
        if retries:
            console.print(f"Retrying: {retries} digest(s), next attempt {when(next_retry, now)}")
        if failures:
            table = Table(title="Failed digests (latest)", title_justify="left")
            for col in ("id", "recipient", "period", "attempts", "reason"):
                table.add_column(col, overflow="fold")
            for d in failures:
                table.add_row(str(d.id), d.email, d.period, str(d.attempts), d.error or "")
            console.print(table)
        stuck = [d for d in sending if not d.in_flight]
        for d in sending:
            if d.in_flight:
                console.print(
                    f"In flight: digest {d.id} to {d.email} ({d.period}) by {d.claimed_by}"
                )
        if stuck:
            table = Table(
                title="Unknown delivery state (process stopped mid-send; never re-sent "
                "automatically)",
                title_justify="left",
            )
            for col in ("id", "recipient", "period", "message-id", "settle with"):
                table.add_column(col, overflow="fold")
            for d in stuck:
                table.add_row(str(d.id), d.email, d.period, d.message_id or "", settle_hint(d))
            console.print(table)
            console.print(
                "Check the mail server's log for the Message-ID: if it was accepted, "
                "--mark-sent; if not, --send-again."
            )

    return Section("outbox", data, render)


__all__ = [
    "SECTIONS",
    "Section",
    "SectionBuilder",
    "iso",
    "settle_hint",
    "status_command",
    "status_section",
    "when",
]
