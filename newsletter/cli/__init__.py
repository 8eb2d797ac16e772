"""Command line (click). The only place that prints or exits.

The core raises :class:`~newsletter.errors.NewsletterError`; :func:`main` turns it into
one line on stderr and the error's exit code (2 for configuration), never a traceback
unless ``--debug`` is given.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from newsletter import __version__, clock
from newsletter.cli.context import AppContext, fail
from newsletter.errors import NewsletterError


class _Group(click.Group):
    """Turns a core error into one line and its exit code for every command, under
    ``main`` and click's test runner alike; ``--debug`` lets the traceback through."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as e:
            app = ctx.find_object(AppContext)
            if app is not None and app.debug:
                raise
            fail(str(e), e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="NEWSLETTER_CONFIG",
    help="Config file (default: ./newsletter.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool, quiet: bool) -> None:
    """Personalised research digests: feeds in, keyword-matched emails out."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not debug:
        # Third-party chatter (premailer's CSS warnings, apscheduler's per-job lines)
        # is noise to an operator.
        for name in ("apscheduler", "premailer", "CSSUTILS", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    simulated = clock.simulated()
    if simulated is not None:
        clock.check()
        logging.getLogger("newsletter").warning(
            "%s=%s: the clock is simulated (now %s); never set it for real sends",
            clock.ENV,
            simulated,
            clock.now().isoformat(timespec="seconds"),
        )
    ctx.obj = AppContext(config_path=config_path, debug=debug, quiet=quiet)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    # One module per command (or group), named for it; ``cli`` stays the single entry.
    from newsletter.cli import (
        db,
        fetch,
        init,
        match,
        preview,
        run,
        send,
        serve,
        status,
        subscribers,
    )

    for command in (
        init.init_command,
        fetch.fetch_command,
        status.status_command,
        serve.serve,
        send.send_command,
        send.resend_command,
        run.run_command,
        subscribers.subscribers_group,
        match.match_cmd,
        preview.preview,
        db.db_group,
    ):
        cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one clear line and a non-zero exit for expected errors.

    Returns the exit code (``ctx.exit(n)`` in a command); the console script and
    ``python -m newsletter`` pass it to ``sys.exit``.
    """
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = cli.main(args=argv, prog_name="newsletter", standalone_mode=False)
    except NewsletterError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    # With standalone_mode=False click returns ctx.exit()'s code, else the command's value.
    return result if isinstance(result, int) else 0
