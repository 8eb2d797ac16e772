"""feed_days: ETag and Last-Modified per listing-day URL of a Daily Papers feed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 20:00:00

A Daily Papers feed reads one URL per listing day (``?date=YYYY-MM-DD``), and re-reads
the last few days on every fetch for their upvotes; with the validators of each day
kept, a day that has not changed answers 304 instead of its whole page again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_days",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"],
            ["feeds.id"],
            name=op.f("fk_feed_days_feed_id_feeds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_days")),
        sa.UniqueConstraint("feed_id", "url", name=op.f("uq_feed_days_feed_id")),
    )


def downgrade() -> None:
    op.drop_table("feed_days")
