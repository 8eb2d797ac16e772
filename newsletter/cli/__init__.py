"""Command line (click). The only place that prints or exits.

The core raises :class:`~newsletter.errors.NewsletterError`; :func:`main` turns it into
one line on stderr and the error's exit code (2 for configuration), never a traceback
unless ``--debug`` is given.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from newsletter import __version__, clock
from newsletter.cli.context import AppContext, fail
from newsletter.errors import NewsletterError

# One module per command (or group), named for it. Each is imported only when its
# command runs, so ``--help`` and ``status`` do not pay for Alembic, the renderer or
# the matcher; the help line is kept here for the same reason (a test keeps it equal
# to the command's docstring). Add a command by adding a line.
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("newsletter.cli.db:db_group", "Manage the database schema."),
    "fetch": (
        "newsletter.cli.fetch:fetch_command",
        "Fetch the feeds and store new entries; exit 1 if any feed failed.",
    ),
    "init": (
        "newsletter.cli.init:init_command",
        "Write a working config, sample feeds, a sample subscriber and the templates.",
    ),
    "match": (
        "newsletter.cli.match:match_cmd",
        "Show the entries a subscriber's next digest would hold, ranked and explained.",
    ),
    "preview": (
        "newsletter.cli.preview:preview",
        "Write the digests that would go out (HTML, text, .eml) and an index; send nothing.",
    ),
    "resend": (
        "newsletter.cli.send:resend_command",
        "Settle a digest left in 'sending' (or failed) by hand; without arguments, list them.",
    ),
    "run": (
        "newsletter.cli.run:run_command",
        "Fetch and send on schedule until stopped (SIGTERM/SIGINT stop cleanly).",
    ),
    "send": ("newsletter.cli.send:send_command", "Deliver the digests that are due now."),
    "serve": (
        "newsletter.cli.serve:serve",
        "Serve the unsubscribe and preferences pages (development server).",
    ),
    "status": (
        "newsletter.cli.status_queue:status_command",  # with the queue section registered
        "Show feed health, entry counts and the last runs.",
    ),
    "subscribers": (
        "newsletter.cli.subscribers:subscribers_group",
        "Subscriber profiles: validate the YAML, sync it into the database, list.",
    ),
    "worker": (
        "newsletter.cli.worker:worker_command",
        "Run queued send batches (needs [queue] broker_url and PostgreSQL).",
    ),
}


def load_command(name: str) -> click.Command:
    """Import the module of command ``name`` and return its click command."""
    module, _, attr = COMMANDS[name][0].partition(":")
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    return command


class _Group(click.Group):
    """Loads commands on demand (see ``COMMANDS``) and turns a core error into one line
    and its exit code for every command, under ``main`` and click's test runner alike;
    ``--debug`` lets the traceback through."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's version loads every command for its help line; ours reads the registry.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in COMMANDS:
                text = click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)
            else:
                text = self.commands[name].get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="NEWSLETTER_LOG_FORMAT",
    show_default=True,
    help="Log lines for people, or one JSON object per line (run, feed, digest ids).",
)
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, debug: bool, quiet: bool, log_format: str
) -> None:
    """Personalised research digests: feeds in, keyword-matched emails out."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    if log_format == "json":
        from newsletter.pipeline.logs import configure  # stdlib only

        configure(level, "json")
    else:
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
