"""``newsletter run``: fetch and send on schedule until stopped."""

from __future__ import annotations

import click

from newsletter.cli.context import AppContext, pass_app, plural, reported_elsewhere
from newsletter.cli.send import graceful_stop, print_summary
from newsletter.config import check_base_url_for_smtp
from newsletter.errors import NewsletterError
from newsletter.pipeline.parallel import composer_for
from newsletter.scheduler import DigestScheduler


@click.command("run")
@click.option("--once", is_flag=True, help="One fetch and one send round, then exit.")
@pass_app
def run_command(app: AppContext, once: bool) -> None:
    """Fetch and send on schedule until stopped (SIGTERM/SIGINT stop cleanly)."""
    check_base_url_for_smtp(app.settings)  # at start, not as a failed round an hour later
    with composer_for(app.settings) as compose:
        scheduler = DigestScheduler(app.engine, app.settings, compose=compose)
        if not once:
            scheduler.run_forever()
            return
        with graceful_stop() as stop, reported_elsewhere():
            scheduler.stop_event = stop
            result = scheduler.once()
        if result.standby:
            raise NewsletterError(
                "another `newsletter run` holds the scheduler lease on this database; not running"
            )
        if result.fetch is not None:
            f = result.fetch
            click.echo(
                f"fetched {plural(len(f.feeds), 'feed')}: "
                f"{f.new} new, {f.updated} updated, {f.failed} failed"
            )
        if result.send is not None:
            print_summary(result.send)
            if result.send.error:
                raise NewsletterError(result.send.error)
        if result.fetch is None or result.send is None or result.send.failed:
            raise click.exceptions.Exit(1)
