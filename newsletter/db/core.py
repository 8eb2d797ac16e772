"""Engine, sessions and Alembic migrations, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.errors import DatabaseError
from newsletter.models import Base

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# Alembic is imported only to migrate: reading the version and finding the head are
# done here, so a command that only reads never pays for importing it.
_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision(?:\s*:[^=]+)?\s*=\s*(.+)$", re.M)

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
    url: str,
    *,
    echo: bool = False,
    migrate: bool = True,
    read_only: bool = False,
    create: bool = True,
) -> Engine:
    """Create the engine for ``url``; create or upgrade the schema unless told not to.

    ``create=False``: never create a SQLite file or its folders (reading commands).

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
        connect_args: dict[str, Any] = {"timeout": 30, "isolation_level": None}
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).expanduser()
            if create:
                _create_private(path)
            elif not path.is_file():
                raise DatabaseError(
                    f"no database at {str(path)!r}: create it with `newsletter db upgrade`"
                )
        kwargs["connect_args"] = connect_args
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
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def _scan_head() -> str | None:
    """The head from the version files' ``revision``/``down_revision`` lines, or None
    when they cannot be read that simply (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for f in (MIGRATIONS_DIR / "versions").glob("*.py"):
        src = f.read_text(encoding="utf-8")
        rev, down = _REVISION.search(src), _DOWN.search(src)
        if rev is None or down is None:
            return None
        revisions.add(rev.group(1))
        parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def head_revision() -> str | None:
    head = _scan_head()
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The stamped revision (None on an empty database), read without Alembic."""
    try:
        with engine.connect() as conn:
            if not engine.dialect.has_table(conn, "alembic_version"):
                return None
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError as e:
        raise DatabaseError(f"cannot read the schema version: {e}") from e
    return rows[0][0] if len(rows) == 1 else None


def schema_state(engine: Engine) -> str:
    """``missing`` (empty database), ``behind`` (needs ``db upgrade``) or ``current``."""
    current = current_revision(engine)
    if current is None:
        return "missing"
    return "current" if current == head_revision() else "behind"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (``newsletter db upgrade``)."""
    from alembic import command

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
    # The dialect modules are imported here, on first use: PostgreSQL's pulls in asyncio
    # and asyncpg's module, which a ``status`` on SQLite has no use for.
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(model)
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(model)
    raise DatabaseError(f"unsupported database backend {name!r}")


def reader_engine(engine: Engine) -> Engine | None:
    """An engine for composing beside the writes, or None to compose on ``engine``.

    SQLite: a second engine on the same file whose transactions only read (no write
    lock). An in-memory SQLite database cannot be opened twice: None, and a run then
    composes and delivers in turn. PostgreSQL: the engine itself (readers never block).
    """
    if engine.dialect.name != "sqlite":
        return engine
    database = engine.url.database
    if not database or database == ":memory:" or "mode=memory" in str(engine.url):
        return None
    return connect(engine.url.render_as_string(hide_password=False), migrate=False, read_only=True)
