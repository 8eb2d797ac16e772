"""``newsletter subscribers``: check, sync and list profiles; unsubscribe by hand."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from newsletter import clock
from newsletter.cli.context import AppContext, fail, pass_app, plural
from newsletter.db import session_scope
from newsletter.db.subscriber_reads import STATUSES, SubscriberInfo, list_subscribers, subscriber_id
from newsletter.db.suppressions import (
    Source,
    get_suppression,
    list_suppressions,
    revoke_links,
    suppress,
    unsuppress,
)
from newsletter.periods import next_send_at
from newsletter.pipeline.sync import sync_directory
from newsletter.profiles import LoadResult, email_problem, normalise_email, read_profiles


def _print_problems(loaded: LoadResult, *, err: bool) -> None:
    for problem in sorted(
        [*loaded.problems, *loaded.warnings], key=lambda e: (e.path or "", e.line or 0)
    ):
        click.echo(str(problem), err=err)


@click.group("subscribers")
def subscribers_group() -> None:
    """Subscriber profiles: validate the YAML, sync it into the database, list."""


@subscribers_group.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@pass_app
def check_cmd(app: AppContext, path: Path | None) -> None:
    """Validate the profiles (or PATH, a directory or a file); the database is not used."""
    loaded = read_profiles(path or app.settings.newsletter.subscribers_dir)
    _print_problems(loaded, err=False)
    n = len(loaded.problems)
    summary = (
        f"{len(loaded.files)} files, {len(loaded.profiles)} valid profiles, "
        f"{n} problem{'s' if n != 1 else ''}"
    )
    click.echo(summary, err=True)
    if n:
        raise SystemExit(1)


@subscribers_group.command("sync")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("-v", "--verbose", is_flag=True, help="List every created and updated address.")
@click.option(
    "--allow-mass-deactivation",
    is_flag=True,
    help="Deactivate even if that is everybody or more than max_deactivate_share.",
)
@pass_app
def sync_cmd(app: AppContext, dry_run: bool, verbose: bool, allow_mass_deactivation: bool) -> None:
    """Apply the profiles to the database: create, update, deactivate.

    Invalid profiles, and every subscriber of a file that cannot be read, are left as
    they were. Unsubscribed addresses stay unsubscribed whatever the YAML says.
    Deactivating everybody, or more than ``max_deactivate_share``, needs
    --allow-mass-deactivation.
    """
    directory = app.settings.newsletter.subscribers_dir
    now = clock.now()
    share = None if allow_mass_deactivation else app.settings.newsletter.max_deactivate_share
    with Session(app.engine, expire_on_commit=False) as session:
        loaded, synced = sync_directory(session, directory, now=now, max_deactivate_share=share)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    _print_problems(loaded, err=True)
    app.say(
        f"{plural(len(loaded.profiles), 'profile')} in {plural(len(loaded.files), 'file')}: "
        f"{len(synced.created)} created, {len(synced.updated)} updated, "
        f"{synced.unchanged} unchanged, {len(synced.deactivated)} deactivated"
        + (" (dry run: nothing changed)" if dry_run else "")
    )
    lines: list[tuple[str, Sequence[str]]] = []
    if verbose:
        lines += [("created", synced.created), ("updated", synced.updated)]
    lines += [
        ("deactivated (profile gone)", synced.deactivated),
        ("left as it was (invalid profile)", synced.held),
        ("stays unsubscribed", synced.suppressed),
    ]
    for label, emails in lines:
        for email in emails:
            app.say(f"  {label}: {email}")
    for source, old, new in synced.moved:
        app.say(
            f"  address changed in {source}: {old} -> {new} "
            f"(a new subscriber; {old} deactivated, its history stays with it)"
        )
    for source, email, message in synced.failed:
        click.echo(f"{source}: {email}: {message}; left as it was", err=True)
    for source in sorted(loaded.failed_files):
        app.say(f"  left as they were: the subscribers of {source} (it has problems)")
    if loaded.problems or synced.failed:
        raise SystemExit(1)


@subscribers_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include subscribers whose profile is gone.")
@click.option("--unsubscribed", is_flag=True, help="Only the suppression list, with sources.")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default=None,
    help="Only subscribers with this status.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_app
def list_cmd(
    app: AppContext, show_all: bool, unsubscribed: bool, status: str | None, as_json: bool
) -> None:
    """List subscribers with their status: active, inactive, deleted or unsubscribed."""
    if unsubscribed:
        echo_unsubscribed(app, as_json=as_json)
        return
    with session_scope(app.reader) as session:
        rows = list_subscribers(session, include_deleted=show_all or status == "deleted")
    if status:
        rows = [r for r in rows if r.status == status]
    now = clock.now()
    nl = app.settings.newsletter
    next_at = {
        r.id: next_send_at(r.schedule, now, nl.default_send_time, nl.timezone)
        for r in rows
        if r.status == "active"
    }
    if as_json:
        click.echo(json.dumps([_subscriber_json(r, next_at.get(r.id)) for r in rows], indent=2))
        return
    if not app.interactive:
        for r in rows:
            click.echo(f"{r.email}\t{r.status}\t{r.frequency}\t{r.keywords}\t{r.source_file or ''}")
        return
    table = Table(title=f"{len(rows)} subscribers")
    for col in ("email", "name", "status", "frequency", "next digest", "keywords", "file"):
        table.add_column(col)
    for r in rows:
        at = next_at.get(r.id)
        table.add_row(
            r.email,
            r.name or "",
            r.status,
            r.frequency,
            f"{at:%Y-%m-%d %H:%M} UTC" if at else "",
            str(r.keywords),
            r.source_file or "",
        )
    Console().print(table)


def _subscriber_json(r: SubscriberInfo, next_at: datetime | None) -> dict[str, Any]:
    return {
        "email": r.email,
        "name": r.name,
        "status": r.status,
        "frequency": r.frequency,
        "next_digest_at": next_at.isoformat() if next_at else None,
        "keywords": r.keywords,
        "file": r.source_file,
        "updated_at": r.updated_at.isoformat(),
    }


OPERATOR_SOURCES = ("operator", "mailto")


@subscribers_group.command("unsubscribe")
@click.argument("email")
@click.option(
    "--source",
    type=click.Choice(OPERATOR_SOURCES),
    default="operator",
    show_default=True,
    help="How the request came: by the operator, or by mail to the unsubscribe address.",
)
@pass_app
def unsubscribe_cmd(app: AppContext, email: str, source: str) -> None:
    """Unsubscribe EMAIL now; no sync will mail it again."""
    src: Source = "mailto" if source == "mailto" else "operator"
    address = normalise_email(email)
    problem = email_problem(address)
    if problem:
        fail(f"{email.strip()!r}: {problem}")
    with session_scope(app.engine) as session:
        found = subscriber_id(session, address)
        added = suppress(session, email=address, subscriber_id=found, source=src)
        current = get_suppression(session, address)
    if not added and current is not None:
        click.echo(
            f"{address} was already unsubscribed "
            f"({current.source}, {current.created_at:%Y-%m-%d %H:%M} UTC)"
        )
        return
    click.echo(f"unsubscribed {address} ({src})")
    if found is None:
        click.echo(
            "note: no subscriber has this address yet; it stays suppressed if one is added",
            err=True,
        )


@subscribers_group.command("resubscribe")
@click.argument("email")
@pass_app
def resubscribe_cmd(app: AppContext, email: str) -> None:
    """Take EMAIL off the suppression list, whatever put it there."""
    address = normalise_email(email)
    with session_scope(app.engine) as session:
        removed = unsuppress(session, address)
    if not removed:
        fail(f"{address} is not unsubscribed")
    click.echo(f"re-subscribed {address}")


@subscribers_group.command("revoke-links")
@click.argument("email")
@pass_app
def revoke_links_cmd(app: AppContext, email: str) -> None:
    """Invalidate every unsubscribe link sent to EMAIL so far (e.g. a forwarded digest)."""
    address = normalise_email(email)
    with session_scope(app.engine) as session:
        found = subscriber_id(session, address)
        if found is None:
            fail(f"no subscriber with address {address}")
        version = revoke_links(session, found)
    click.echo(f"revoked the links of {address}; new links use version {version}")


def echo_unsubscribed(app: AppContext, *, as_json: bool = False) -> None:
    """Print the suppression list: a table on a terminal, tab-separated lines otherwise."""
    with session_scope(app.reader) as session:
        rows = list_suppressions(session)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "email": r.email,
                        "name": r.name,
                        "source": r.source,
                        "unsubscribed_at": r.created_at.isoformat(),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    if not app.interactive:
        for r in rows:
            click.echo(f"{r.email}\t{r.source}\t{r.created_at.isoformat()}")
        return
    table = Table(title=f"{len(rows)} unsubscribed")
    for col in ("email", "name", "source", "since (UTC)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.email, r.name or "", r.source, f"{r.created_at:%Y-%m-%d %H:%M}")
    Console().print(table)
