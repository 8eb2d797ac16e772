"""Schema creation and migrations on every backend."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from newsletter.db import connect, current_revision, head_revision


def test_connect_creates_schema_at_head(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"feeds", "entries", "entry_sources", "subscribers", "digests"} <= tables


def test_upgrade_is_idempotent(db_url: str) -> None:
    first = connect(db_url)
    first.dispose()
    again = connect(db_url)
    try:
        assert current_revision(again) == head_revision()
    finally:
        again.dispose()


def test_connect_without_migrate_leaves_database_empty(db_url: str) -> None:
    eng = connect(db_url, migrate=False)
    try:
        assert current_revision(eng) is None
        assert "feeds" not in inspect(eng).get_table_names()
    finally:
        eng.dispose()
