"""``newsletter send``, ``resend`` and ``run``, and the outbox section of ``status``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from newsletter.cli.context import AppContext, only_subscribers, pass_app
from newsletter.cli.progress import ProgressBar
from newsletter.cli.status import Section, iso, status_section, when
from newsletter.db import outbox, outbox_admin, session_scope
from newsletter.db.entries import last_run
from newsletter.delivery import make_sender
from newsletter.errors import NewsletterError
from newsletter.pipeline.drafts import composer_for
from newsletter.pipeline.send import Outcome, SendOptions, SendSummary, send_due
from newsletter.scheduler import DigestScheduler


class _Bar(ProgressBar):
    """The bar of ``send``: one step per digest, with its outcome and recipient."""

    def __init__(self) -> None:
        super().__init__("sending")

    def advance(self, outcome: Outcome, recipient: str) -> None:
        self.step(f"{outcome} {recipient}")


@contextmanager
def _graceful_stop() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set an event instead of killing: the message in flight is finished
    and recorded first. A second signal interrupts at once."""
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        click.echo("stopping after the message in flight (again to abort)", err=True)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_summary(summary: SendSummary) -> None:
    click.echo(
        f"sent {summary.sent}, skipped {summary.skipped} (nothing new), "
        f"failed {summary.failed}, retried {summary.retried}"
    )
    for recipient, reason in summary.failures:
        click.echo(f"  failed: {recipient}: {reason}")
    if summary.pending:
        click.echo(f"{summary.pending} digest(s) still pending; the next run sends them")
    if summary.ambiguous:
        click.echo(
            f"{summary.ambiguous} digest(s) in an unknown state (process stopped mid-send); "
            "see `newsletter resend`"
        )
    if summary.interrupted:
        click.echo("interrupted: the rest stays pending for the next run")


def _print_plan(summary: SendSummary) -> None:
    would = [p for p in summary.planned if p.subject is not None and p.n_entries]
    if not summary.planned:
        click.echo("nothing is due")
        return
    for p in summary.planned:
        if p.subject is None:
            click.echo(f"skip  {p.recipient}  [{p.period}]  nothing new")
        elif p.n_entries == 0 and p.size:
            click.echo(f"send  {p.recipient}  [{p.period}]  {p.subject!r}  (empty-day note)")
        elif p.size:
            click.echo(
                f"send  {p.recipient}  [{p.period}]  {p.subject!r}  "
                f"{p.n_entries} entries, {p.size / 1024:.1f} KB"
            )
        else:
            click.echo(f"fail  {p.recipient}  [{p.period}]  {p.subject}")
    skipped = sum(1 for p in summary.planned if p.subject is None)
    click.echo(f"dry run: would send {len(would)}, skip {skipped} (nothing new); nothing changed")


@click.command("send")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; change nothing.")
@only_subscribers
@click.option(
    "--now",
    "force",
    is_flag=True,
    help="Ignore send_time: send every current-period digest not sent yet.",
)
@pass_app
def send_command(app: AppContext, dry_run: bool, emails: tuple[str, ...], force: bool) -> None:
    """Deliver the digests that are due now."""
    settings = app.settings
    options = SendOptions(force=force, emails=emails or None, dry_run=dry_run)
    bar = _Bar() if app.interactive and not dry_run else None
    try:
        with (
            _graceful_stop() as stop,
            make_sender(settings) as sender,
            composer_for(settings) as compose,
        ):
            summary = send_due(
                app.engine,
                settings,
                sender,
                options=options,
                stop=stop,
                progress=bar,
                compose=compose,
            )
    finally:
        if bar is not None:
            bar.stop()
    if dry_run:
        _print_plan(summary)
        return
    _print_summary(summary)
    if summary.error:
        raise NewsletterError(summary.error)
    if summary.failed:
        raise click.exceptions.Exit(1)


def _settle_hint(d: outbox_admin.DigestInfo) -> str:
    return f"newsletter resend {d.id} --mark-sent | --send-again"


@click.command("resend")
@click.argument("digest_id", type=int, required=False)
@click.option(
    "--mark-sent", "action", flag_value="mark-sent", help="It did go out: record it as sent."
)
@click.option(
    "--send-again",
    "action",
    flag_value="send-again",
    help="It did not: make it pending so the next send delivers it.",
)
@pass_app
def resend_command(app: AppContext, digest_id: int | None, action: str | None) -> None:
    """Settle a digest left in 'sending' (or failed) by hand; without arguments, list them.

    A process killed while the SMTP server was accepting a message leaves its digest in
    'sending': it may or may not have arrived, so it is never re-sent on its own. Check
    the mail server's log for its Message-ID, then mark it sent or send it again.
    """
    now = datetime.now(UTC)
    if digest_id is None:
        if action:
            raise click.UsageError("give the DIGEST_ID to settle")
        with session_scope(app.engine) as session:
            rows = outbox_admin.ambiguous(session, now=now) + outbox_admin.recent_failures(
                session, limit=20
            )
        if not rows:
            click.echo("nothing to settle: no digest is in 'sending' or 'failed'")
            return
        table = Table(title="Digests to settle", title_justify="left")
        for col in ("id", "state", "recipient", "period", "since", "message-id / reason"):
            table.add_column(col, overflow="fold")
        for d in rows:
            state = d.status + (" (in flight)" if d.in_flight else "")
            detail = d.error if d.status == "failed" else d.message_id
            table.add_row(
                str(d.id), state, d.email, d.period, when(d.created_at, now), detail or ""
            )
        Console(width=None if app.interactive else 200).print(table)
        click.echo("settle one with: newsletter resend ID --mark-sent | --send-again")
        return
    if action is None:
        raise click.UsageError("choose --mark-sent or --send-again")
    with session_scope(app.engine) as session:
        info = outbox_admin.settle(
            session,
            digest_id,
            "mark-sent" if action == "mark-sent" else "send-again",
            now=now,
        )
    if info.status == "sent":
        click.echo(f"digest {info.id} to {info.email} ({info.period}) recorded as sent")
    else:
        click.echo(
            f"digest {info.id} to {info.email} ({info.period}) is pending again; "
            "the next `newsletter send` (or `run`) delivers it"
        )


@click.command("run")
@click.option("--once", is_flag=True, help="One fetch and one send round, then exit.")
@pass_app
def run_command(app: AppContext, once: bool) -> None:
    """Fetch and send on schedule until stopped (SIGTERM/SIGINT stop cleanly)."""
    with composer_for(app.settings) as compose:
        scheduler = DigestScheduler(app.engine, app.settings, compose=compose)
        if not once:
            scheduler.run_forever()
            return
        with _graceful_stop() as stop:
            scheduler.stop_event = stop
            result = scheduler.once()
        if result.standby:
            raise NewsletterError(
                "another `newsletter run` holds the scheduler lease on this database; not running"
            )
        if result.fetch is not None:
            f = result.fetch
            click.echo(
                f"fetched {len(f.feeds)} feeds: {f.new} new, {f.updated} updated, {f.failed} failed"
            )
        if result.send is not None:
            _print_summary(result.send)
            if result.send.error:
                raise NewsletterError(result.send.error)
        if result.fetch is None or result.send is None or result.send.failed:
            raise click.exceptions.Exit(1)


# -- status -------------------------------------------------------------------------------


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
        "resend": None if d.in_flight else _settle_hint(d),
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
                table.add_row(str(d.id), d.email, d.period, d.message_id or "", _settle_hint(d))
            console.print(table)
            console.print(
                "Check the mail server's log for the Message-ID: if it was accepted, "
                "--mark-sent; if not, --send-again."
            )

    return Section("outbox", data, render)


COMMANDS = [send_command, resend_command, run_command]
