"""``newsletter send`` and ``resend``: deliver the due digests, settle one by hand."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from newsletter import clock
from newsletter.cli.context import (
    AppContext,
    only_subscribers,
    pass_app,
    plural,
    reported_elsewhere,
)
from newsletter.cli.progress import ProgressBar
from newsletter.cli.status import when
from newsletter.config import check_base_url_for_smtp
from newsletter.db import session_scope
from newsletter.db.outbox import admin as outbox_admin
from newsletter.delivery import make_sender
from newsletter.errors import NewsletterError
from newsletter.pipeline.parallel import composer_for
from newsletter.pipeline.send import Outcome, SendOptions, SendSummary, send_due


class _Bar(ProgressBar):
    """The bar of ``send``: one step per digest, with its outcome and recipient."""

    def __init__(self) -> None:
        super().__init__("sending")

    def advance(self, outcome: Outcome, recipient: str) -> None:
        self.step(f"{outcome} {recipient}")


@contextmanager
def graceful_stop() -> Iterator[threading.Event]:
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


def print_summary(summary: SendSummary) -> None:
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
@click.option(
    "--to",
    "to",
    metavar="ADDRESS",
    help="Test send: mail --subscriber's next digest to ADDRESS instead; record nothing.",
)
@pass_app
def send_command(
    app: AppContext, dry_run: bool, emails: tuple[str, ...], force: bool, to: str | None
) -> None:
    """Deliver the digests that are due now.

    With ``--subscriber EMAIL --to ADDRESS``: a test send of that subscriber's next
    digest to ADDRESS through the configured sender; the outbox is not touched.
    """
    settings = app.settings
    if to is not None:
        _test_send(app, emails, to, dry_run=dry_run, force=force)
        return
    options = SendOptions(force=force, emails=emails or None, dry_run=dry_run)
    if not dry_run:
        check_base_url_for_smtp(settings)  # queued batches would fail in the workers
        # the textfile of [metrics], however the send ends
        click.get_current_context().call_on_close(lambda: _write_metrics(app))
    if settings.queue.enabled and not dry_run:
        _enqueue(app, options)
        return
    bar = _Bar() if app.interactive and not dry_run else None
    try:
        with (
            graceful_stop() as stop,
            make_sender(settings) as sender,
            composer_for(settings) as compose,
            reported_elsewhere(),
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
    print_summary(summary)
    if summary.error:
        raise NewsletterError(f"{summary.error}; the digests stay pending for the next run")
    if summary.failed:
        raise click.exceptions.Exit(1)


def _write_metrics(app: AppContext) -> None:
    if app.settings.metrics.textfile is None:
        return
    from newsletter.scheduler import write_metrics  # APScheduler only when it is needed

    write_metrics(app.settings, app.engine)


def _test_send(
    app: AppContext, emails: tuple[str, ...], to: str, *, dry_run: bool, force: bool
) -> None:
    """``send --subscriber EMAIL --to ADDRESS``: one digest, elsewhere, recorded nowhere."""
    from newsletter.pipeline.trial import TEST_PREFIX, send_test

    if len(emails) != 1:
        raise click.UsageError("--to needs exactly one --subscriber EMAIL")
    if dry_run or force:
        raise click.UsageError("--to is a test send: it takes no --dry-run or --now")
    check_base_url_for_smtp(app.settings)
    with make_sender(app.settings) as sender:
        got = send_test(app.engine, app.settings, sender, email=emails[0], to=to)
    click.echo(
        f"test send: {got.subscriber}'s next digest [{got.period}] "
        f"({plural(got.entries, 'entry', 'entries')}) sent to {got.to} "
        f"as {TEST_PREFIX + got.subject!r}; nothing recorded in the outbox"
    )
    click.echo(f"  its links act for {got.subscriber} (List-Unsubscribe left out)")


def _enqueue(app: AppContext, options: SendOptions) -> None:
    """Queue mode: plan the due digests and queue one task per batch for the workers."""
    from newsletter.pipeline.batch import plan_batches
    from newsletter.workers.app import enqueue, make_app

    batches = plan_batches(app.engine, app.settings, options)
    if not batches:
        click.echo("nothing is due")
        return
    enqueue(make_app(app.settings), batches)
    n = sum(len(b) for b in batches)
    click.echo(
        f"queued {n} digest(s) in {len(batches)} batch(es) for the workers; "
        "`newsletter status` shows their progress"
    )


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
    now = clock.now()
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
