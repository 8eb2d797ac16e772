"""What every command shares: settings and the engine, each built once and lazily.

Nothing heavy is imported here at module level: ``newsletter --help`` must not pay
for SQLAlchemy or Alembic (see benchmarks/cli_startup.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from newsletter.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.config import Settings

NO_CONFIG = (
    "no config file found (no --config, no NEWSLETTER_CONFIG, no ./newsletter.toml): "
    "cd into your digest folder, pass --config PATH, or create one with `newsletter init DIR`"
)


@dataclass
class AppContext:
    config_path: str | None = None
    debug: bool = False
    quiet: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The settings; without any config file this is an error, not silent defaults."""
        if self._settings is None:
            from newsletter.config import DEFAULT_CONFIG_NAME, load_settings

            if not self.config_path and not Path(DEFAULT_CONFIG_NAME).exists():
                raise ConfigError(NO_CONFIG)
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def engine(self) -> Engine:
        """The engine, with the schema created or upgraded on first use (writers)."""
        if self._engine is None:
            from newsletter.db import connect

            s = self.settings.database
            self._engine = connect(s.url, echo=s.echo)
        return self._engine

    @property
    def reader(self) -> Engine:
        """The engine for commands that only read: never creates a database or schema.

        A mistyped SQLite path must not leave folders and an empty database behind.
        """
        if self._engine is None:
            from newsletter.db import connect, schema_state

            s = self.settings.database
            hint = "create it with `newsletter db upgrade`"
            engine = connect(s.url, echo=s.echo, migrate=False, create=False)
            state = schema_state(engine)
            if state == "missing":
                engine.dispose()
                raise DatabaseError(f"no database at {engine.url!r}: {hint}")
            if state == "behind":
                engine.dispose()
                raise DatabaseError(
                    f"the database at {engine.url!r} is not at the latest schema: "
                    "update it with `newsletter db upgrade`"
                )
            self._engine = engine
        return self._engine

    def raw_engine(self) -> Engine:
        """The engine without touching the schema (for ``db`` commands)."""
        from newsletter.db import connect

        s = self.settings.database
        return connect(s.url, echo=s.echo, migrate=False)

    def say(self, message: str) -> None:
        """An informational line on stdout; ``-q`` silences it (problems go to stderr)."""
        if not self.quiet:
            click.echo(message)

    @property
    def interactive(self) -> bool:
        """Progress bars only on a terminal, never in logs or pipes."""
        return not self.quiet and sys.stderr.isatty()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


pass_app = click.make_pass_decorator(AppContext)


def _not_reported(record: logging.LogRecord) -> bool:
    return not getattr(record, "reported", False)


@contextmanager
def reported_elsewhere() -> Iterator[None]:
    """Drop log records marked ``extra={"reported": True}`` while the command prints
    the same event itself (the fetch table, ``run --once``'s summary): one message per
    event. Daemons keep them, since there the log is the only report."""
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.addFilter(_not_reported)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(_not_reported)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 profile``, ``2 profiles``: the count with its noun in the right number."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def fail(message: str, code: int = 1) -> NoReturn:
    """One ``error:`` line and exit ``code``, the same under ``main`` and click's runner."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


# ``--subscriber EMAIL`` (repeatable) of the commands that work on a selection.
only_subscribers = click.option(
    "--subscriber",
    "emails",
    multiple=True,
    metavar="EMAIL",
    help="Only this subscriber (repeatable).",
)
