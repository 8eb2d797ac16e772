"""``newsletter db ...``: schema management."""

from __future__ import annotations

import click

from newsletter.cli.context import AppContext, pass_app
from newsletter.db import current_revision, head_revision, upgrade


@click.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Create the database or upgrade it to the latest schema."""
    engine = app.raw_engine()
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"database is up to date (revision {after})")
    else:
        click.echo(f"database upgraded: {before or 'empty'} -> {after}")


@db_group.command("current")
@pass_app
def db_current(app: AppContext) -> None:
    """Print the schema revision of the database and the latest one known."""
    engine = app.raw_engine()
    try:
        click.echo(f"database: {current_revision(engine) or 'empty'}  latest: {head_revision()}")
    finally:
        engine.dispose()
