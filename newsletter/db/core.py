"""Engine, sessions and Alembic migrations, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.errors import DatabaseError
from newsletter.models import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# Bound parameters per IN (...) list and rows per multi-row VALUES: well under
# SQLite's and PostgreSQL's limits.
CHUNK = 500

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``, so a bulk query stays within those limits."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets a reader (status, preview) run beside a sender; busy_timeout makes a
    # second process wait for the write lock instead of failing at once.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a read-then-write transaction that upgrades later
    # can deadlock with another writer and fail with "database is locked".
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(conn: Any) -> None:
    # A reader's transaction: one consistent snapshot (WAL), no write lock.
    conn.exec_driver_sql("BEGIN")


def _create_private(path: Path) -> None:
    """Create a new SQLite file as 0600 (its directory 0700 if new) before SQLite does.

    The database holds addresses and profiles; SQLite gives its ``-wal``/``-shm`` files
    the main file's mode, so they are private too. An existing file keeps its mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # e.g. a read-only directory: let SQLite report it in its own words


def connect(
    url: str, *, echo: bool = False, migrate: bool = True, read_only: bool = False
) -> Engine:
    """Create the engine for ``url``; create or upgrade the schema unless told not to.

    ``read_only``: an engine for sessions that only read (composing). On SQLite their
    transactions then begin deferred and read a snapshot beside the writer, instead of
    taking the write lock at BEGIN like every other session (see above).
    """
    try:
        parsed = make_url(url)
    except Exception as e:  # ArgumentError, ValueError: both mean a bad URL
        raise DatabaseError(f"invalid database URL {url!r}: {e}") from e
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        if parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database).expanduser())
        kwargs["connect_args"] = {"timeout": 30, "isolation_level": None}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (SQLAlchemyError, ImportError) as e:
        raise DatabaseError(f"cannot use database {parsed!r}: {e}") from e
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        begin = _sqlite_begin_deferred if read_only else _sqlite_begin_immediate
        event.listen(engine, "begin", begin)
    if migrate:
        ensure_schema(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as e:
        raise DatabaseError(f"cannot read the schema version: {e}") from e


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (``newsletter db upgrade``)."""
    try:
        command.upgrade(_alembic_config(engine), revision)
    except SQLAlchemyError as e:
        raise DatabaseError(f"migration failed on {engine.url!r}: {e}") from e


def ensure_schema(engine: Engine) -> None:
    """Create or upgrade the schema on first use; cheap when already at head."""
    if current_revision(engine) != head_revision():
        upgrade(engine)


def dialect_insert(session: Session, model: type[Base]) -> Any:
    """An ``INSERT`` that supports ``ON CONFLICT DO NOTHING`` on this session's backend."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise DatabaseError(f"unsupported database backend {name!r}")
