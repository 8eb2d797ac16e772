"""``newsletter serve``: the web app (unsubscribe, preferences) for development."""

from __future__ import annotations

import signal
from types import FrameType

import click
from werkzeug.serving import make_server

from newsletter.cli.context import AppContext, pass_app
from newsletter.config import check_base_url_for_smtp
from newsletter.errors import NewsletterError


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
    from newsletter.web.app import create_app

    settings = app.settings
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    flask_app = create_app(settings, app.engine)
    check_base_url_for_smtp(settings)  # its confirmation mails carry base_url links
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
