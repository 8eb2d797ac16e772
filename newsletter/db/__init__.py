"""Database access: the engine, sessions, migrations and every query.

Split by concern (``core``, ``entries``, ``subscribers``, ``outbox``) so no module
grows past a screenful of queries; the stages import the functions they need.
"""

from __future__ import annotations

from newsletter.db.core import (
    connect,
    current_revision,
    ensure_schema,
    head_revision,
    schema_state,
    session_scope,
    upgrade,
)

__all__ = [
    "connect",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "schema_state",
    "session_scope",
    "upgrade",
]
