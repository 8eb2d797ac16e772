"""What every command shares: settings and the engine, each built once and lazily."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import NoReturn

import click
from sqlalchemy import Engine

from newsletter.config import Settings, load_settings
from newsletter.db import connect


@dataclass
class AppContext:
    config_path: str | None = None
    debug: bool = False
    quiet: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def engine(self) -> Engine:
        """The engine, with the schema created or upgraded on first use."""
        if self._engine is None:
            s = self.settings.database
            self._engine = connect(s.url, echo=s.echo)
        return self._engine

    def raw_engine(self) -> Engine:
        """The engine without touching the schema (for ``db`` commands)."""
        s = self.settings.database
        return connect(s.url, echo=s.echo, migrate=False)

    @property
    def interactive(self) -> bool:
        """Progress bars only on a terminal, never in logs or pipes."""
        return not self.quiet and sys.stderr.isatty()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


pass_app = click.make_pass_decorator(AppContext)


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
