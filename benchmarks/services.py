"""What the queue benchmarks need besides the product: PostgreSQL, a Redis server, a workload.

Each piece is found or started here, and a missing one raises :class:`Unavailable` with
the reason, which the benchmarks print as a skip instead of a traceback: ``make bench``
must run on a fresh machine that has neither.

PostgreSQL: a database of the benchmarks' own (``bench_queue`` by default, created when
missing) and in it a fresh schema per run, dropped afterwards, so two runs (or a run and
the test suite) never see each other's rows. Redis: a ``redis-server`` started on a
free loopback port, without persistence (the benchmark measures, it does not recover).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url

from newsletter.db import session_scope
from newsletter.db.core import connect
from newsletter.models import Digest, DigestEntry

POSTGRES_ENV = "BENCH_POSTGRES_URL"  # not NEWSLETTER_*: the settings refuse unknown ones
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BENCH_DATABASE = "bench_queue"


class Unavailable(Exception):
    """A service the benchmark needs is not there; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_base_url() -> str:
    """The server to use: ``$BENCH_POSTGRES_URL``, else the test suite's
    ``$NEWSLETTER_TEST_POSTGRES_URL``, else the local default (user postgres)."""
    return (
        os.environ.get(POSTGRES_ENV)
        or os.environ.get("NEWSLETTER_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES
    )


@contextmanager
def postgres_schema(
    base: str | None = None, database: str = BENCH_DATABASE, *, prefix: str = "bench"
) -> Iterator[str]:
    """The URL of a fresh schema in ``database`` on the server of ``base``; dropped after."""
    try:
        import psycopg  # noqa: F401  # the driver: pip install '.[postgres]'
    except ImportError as e:
        raise Unavailable(f"psycopg is not installed ({e}): pip install '.[postgres]'") from e
    server = make_url(base or postgres_base_url())
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            known = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}
            ).first()
            if known is None:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
    except Exception as e:  # refused, unknown host, bad password: say so and skip
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unavailable(
            f"no PostgreSQL at {server.render_as_string()} ({reason}); "
            f"set {POSTGRES_ENV} to a server where the user may create a database"
        ) from e
    finally:
        admin.dispose()
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    db = create_engine(server.set(database=database), isolation_level="AUTOCOMMIT")
    try:
        with db.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = server.set(database=database).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        yield url.render_as_string(hide_password=False)
    finally:
        with db.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        db.dispose()


class RedisServer:
    """``with RedisServer() as redis:`` a throw-away broker on ``redis.url``."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Unavailable("redis-server is not installed (apt install redis-server)")
        self.binary = binary
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="newsletter-bench-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--dir", self._dir.name, "--save", "", "--appendonly", "no"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise Unavailable(f"redis-server did not start on 127.0.0.1:{self.port}")

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None
        self._dir.cleanup()


def clear_outbox(db_url: str) -> None:
    """Forget every digest, so the same digests are due again for the next mode."""
    engine = connect(db_url, migrate=False)
    try:
        with session_scope(engine) as session:
            session.execute(delete(DigestEntry))
            session.execute(delete(Digest))
    finally:
        engine.dispose()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, printed beside every figure."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


__all__ = [
    "RedisServer",
    "Unavailable",
    "clear_outbox",
    "free_port",
    "load_average",
    "postgres_base_url",
    "postgres_schema",
]
