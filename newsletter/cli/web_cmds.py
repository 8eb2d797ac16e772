"""``newsletter serve`` and the operator's unsubscribe commands.

The ``unsubscribe``, ``resubscribe`` and ``revoke-links`` commands join the
``subscribers`` group (owned by ``subscribers_cmds``) when the CLI registers its
modules; ``subscribers list --unsubscribed`` calls :func:`echo_unsubscribed`.
"""

from __future__ import annotations

import json
import signal
from types import FrameType

import click
from rich.console import Console
from rich.table import Table
from werkzeug.serving import make_server

from newsletter.cli.context import AppContext, fail, pass_app
from newsletter.db import session_scope
from newsletter.db.subscribers import subscriber_id
from newsletter.db.suppressions import (
    Source,
    get_suppression,
    list_suppressions,
    revoke_links,
    suppress,
    unsuppress,
)
from newsletter.errors import NewsletterError
from newsletter.profiles import email_problem, normalise_email

OPERATOR_SOURCES = ("operator", "mailto")


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: [web] host).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: [web] port)."
)
@pass_app
def serve(app: AppContext, host: str | None, port: int | None) -> None:
    """Serve the unsubscribe and preferences pages (development server)."""
    # Flask is imported here, not at module level: every other command starts faster.
    from newsletter.web import create_app

    settings = app.settings
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    flask_app = create_app(settings, app.engine)
    try:
        server = make_server(host, port, flask_app, threaded=True)
    except OSError as e:
        raise NewsletterError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    click.echo(
        f"serving on http://{host}:{server.server_port}/ (links in emails point at "
        f"{settings.newsletter.base_url}); development server: use gunicorn in production, "
        "see deploy/web.md",
        err=True,
    )
    click.echo(f"http://{host}:{server.server_port}/")
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


@click.command("unsubscribe")
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


@click.command("resubscribe")
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


@click.command("revoke-links")
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
    with session_scope(app.engine) as session:
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


SUBSCRIBER_COMMANDS = [unsubscribe_cmd, resubscribe_cmd, revoke_links_cmd]
COMMANDS = [serve]
