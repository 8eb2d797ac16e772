"""a random salt per subscriber, signed into every unsubscribe token

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 17:50:00

A token named only subscriber id, version and list: a database rebuilt with the same
secret reuses the ids, and old links then unsubscribed other people. Every row now gets
a random ``token_salt`` that the token's signature covers.

Existing rows are backfilled with fresh random salts, and the token format changes, so
every link in mail sent before this upgrade stops working (the page says the link is
invalid; the mailto: unsubscribe and the next digest's links still work). There is no
way around this without keeping the old, weaker scheme alive.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_salt", sa.String(length=32), nullable=True))
    bind = op.get_bind()
    subscribers = sa.table("subscribers", sa.column("id", sa.Integer), sa.column("token_salt"))
    ids = [row.id for row in bind.execute(sa.select(subscribers.c.id))]
    for sid in ids:  # one random value per row: no SQL function is random on both dialects
        bind.execute(
            subscribers.update()
            .where(subscribers.c.id == sid)
            .values(token_salt=secrets.token_hex(16))
        )
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.alter_column("token_salt", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("token_salt")
