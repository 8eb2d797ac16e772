"""profile_changes: the history of what feedback links changed in a self-service profile

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:00:00

Every More/Fewer-like-this click rewrites the subscriber's YAML file; the file's text
before and after is kept, so the page can show exactly what changed and Undo can put
the old bytes back (only while the file is still what the change left).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=False),
        sa.Column("before_text", sa.Text(), nullable=False),
        sa.Column("after_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_profile_changes_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["entries.id"],
            name=op.f("fk_profile_changes_entry_id_entries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_changes")),
    )
    op.create_index("ix_profile_changes_subscriber_id", "profile_changes", ["subscriber_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_profile_changes_subscriber_id", table_name="profile_changes")
    op.drop_table("profile_changes")
