"""entries: when the upvotes were read, and the Daily Papers listing day

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 17:50:00

Upvotes are refreshed on every fetch of a listing day (the latest read wins, so ranking
follows today's popularity) and a paper stays a trending candidate for a few days after
it was first listed; both need a column of their own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upvotes_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_entries_listed_at"), ["listed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_entries_listed_at"))
        batch_op.drop_column("listed_at")
        batch_op.drop_column("upvotes_at")
