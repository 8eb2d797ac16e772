"""``newsletter subscribers check|sync|list`` and ``newsletter match``.

Problems in profiles are printed one per line as ``file:line: field: what is wrong``
and make the exit code 1; the valid profiles are still synced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from newsletter.cli.context import AppContext, fail, pass_app
from newsletter.db import session_scope
from newsletter.db.articles import candidate_windows
from newsletter.db.subscribers import (
    STATUSES,
    SubscriberInfo,
    list_subscribers,
    load_profiles,
    subscriber_id,
)
from newsletter.domain import Match
from newsletter.matching import Matcher, field_text
from newsletter.profiles import LoadResult, read_profiles, sync_directory


def _print_problems(loaded: LoadResult, *, err: bool) -> None:
    for problem in loaded.problems:
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
@pass_app
def sync_cmd(app: AppContext, dry_run: bool, verbose: bool) -> None:
    """Apply the profiles to the database: create, update, deactivate.

    Invalid profiles, and every subscriber of a file that cannot be read, are left as
    they were. Unsubscribed addresses stay unsubscribed whatever the YAML says.
    """
    directory = app.settings.newsletter.subscribers_dir
    now = datetime.now(UTC)
    with Session(app.engine, expire_on_commit=False) as session:
        loaded, synced = sync_directory(session, directory, now=now)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    _print_problems(loaded, err=True)
    click.echo(
        f"{len(loaded.profiles)} profiles in {len(loaded.files)} files: "
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
            click.echo(f"  {label}: {email}")
    for source in sorted(loaded.failed_files):
        click.echo(f"  left as they were: the subscribers of {source} (it has problems)")
    if loaded.problems:
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
        from newsletter.cli.web_cmds import echo_unsubscribed

        echo_unsubscribed(app, as_json=as_json)
        return
    with session_scope(app.engine) as session:
        rows = list_subscribers(session, include_deleted=show_all or status == "deleted")
    if status:
        rows = [r for r in rows if r.status == status]
    if as_json:
        click.echo(json.dumps([_subscriber_json(r) for r in rows], indent=2))
        return
    if not app.interactive:
        for r in rows:
            click.echo(f"{r.email}\t{r.status}\t{r.frequency}\t{r.keywords}\t{r.source_file or ''}")
        return
    table = Table(title=f"{len(rows)} subscribers")
    for col in ("email", "name", "status", "frequency", "keywords", "file"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.email, r.name or "", r.status, r.frequency, str(r.keywords), r.source_file or ""
        )
    Console().print(table)


def _subscriber_json(r: SubscriberInfo) -> dict[str, Any]:
    return {
        "email": r.email,
        "name": r.name,
        "status": r.status,
        "frequency": r.frequency,
        "keywords": r.keywords,
        "file": r.source_file,
        "updated_at": r.updated_at.isoformat(),
    }


# -- match -----------------------------------------------------------------------------


def _parse_moment(value: str, option: str) -> datetime:
    """A date (midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected a date like 2026-01-09 or a time like 2026-01-09T07:00, got {value!r}",
            param_hint=option,
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _match_json(rank: int, m: Match) -> dict[str, Any]:
    a = m.article
    return {
        "rank": rank,
        "id": a.id,
        "title": a.title,
        "link": a.link,
        "score": m.score,
        "upvotes": a.upvotes,
        "published": a.published.isoformat(),
        "first_seen": a.first_seen.isoformat(),
        "feed": a.feed_name,
        "matched": [{"keyword": k, "field": f} for k, f in m.matched],
        "hits": [
            {
                "keyword": h.keyword,
                "field": h.field,
                "weight": h.weight,
                "spans": [list(s) for s in h.spans],
                "text": [field_text(a, h.field)[s:e] for s, e in h.spans],
            }
            for h in m.hits
        ],
    }


def _why(m: Match) -> str:
    """``RLHF (title, abstract), reward model (title)``: each keyword once."""
    fields: dict[str, list[str]] = {}
    for keyword, field_name in m.matched:
        fields.setdefault(keyword, []).append(field_name)
    return ", ".join(f"{k} ({', '.join(f)})" for k, f in fields.items())


@click.command("match")
@click.option("--subscriber", "email", required=True, metavar="EMAIL", help="Whose profile.")
@click.option(
    "--since",
    metavar="DATE",
    default=None,
    help="Also consider entries first fetched since DATE (widens the window).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Show the top N (default: the digest's max_items; 0: all).",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="DATETIME",
    default=None,
    help="Evaluate the window at this moment instead of now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for scripts.")
@pass_app
def match_cmd(
    app: AppContext,
    email: str,
    since: str | None,
    limit: int | None,
    as_of: str | None,
    as_json: bool,
) -> None:
    """Show the entries a subscriber's next digest would hold, ranked and explained."""
    now = _parse_moment(as_of, "--as-of") if as_of else datetime.now(UTC)
    since_at = _parse_moment(since, "--since") if since else None
    with session_scope(app.engine) as session:
        sid = subscriber_id(session, email)
        if sid is None:
            fail(f"no subscriber with address {email.strip()} (is the profile synced?)")
        profile = load_profiles(session, [sid], include_suppressed=True)[sid]
        articles, windows = candidate_windows(
            session, [sid], now=now, since=since_at, frequency_of={sid: profile.frequency}
        )
        status = list_subscribers(session, include_deleted=True, ids=[sid])[0].status
    window = windows[sid]
    ranked = Matcher(articles).match(profile, candidates=window.article_ids)
    top = (profile.max_items or app.settings.newsletter.max_items) if limit is None else limit
    shown = ranked if top == 0 else ranked[:top]
    if as_json:
        click.echo(json.dumps([_match_json(i, m) for i, m in enumerate(shown, 1)], indent=2))
        return
    if status != "active":
        click.echo(f"note: {profile.email} is {status}: no digest goes out", err=True)
    span = f"{window.start:%Y-%m-%d %H:%M} .. {window.end:%Y-%m-%d %H:%M} UTC"
    click.echo(
        f"{profile.email}: {len(window.article_ids)} new entries ({span}), "
        f"{len(ranked)} matched, showing {len(shown)}",
        err=not app.interactive,
    )
    if not app.interactive:
        for i, m in enumerate(shown, 1):
            click.echo(f"{i}\t{m.score:g}\t{m.article.title}\t{_why(m)}")
        return
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("title", ratio=3)
    table.add_column("matched (field)", ratio=2)
    for i, m in enumerate(shown, 1):
        table.add_row(str(i), f"{m.score:g}", m.article.title, _why(m))
    Console().print(table)


COMMANDS = [subscribers_group, match_cmd]
