"""digest_copies: sent digests kept for "View in browser"; rate_hits: form rate limits

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:45:00

Each sent digest is kept (the MIME message, compressed) for ``[web] keep_digests_days``
so the email's "View in browser" link (``/d/<token>``) and the preferences page can show
it; a send prunes the expired ones.

The subscribe form's rate limits are counted in ``rate_hits`` so they hold across web
processes (gunicorn workers) and restarts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_copies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digests.id"],
            name=op.f("fk_digest_copies_digest_id_digests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_digest_copies_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_copies")),
        sa.UniqueConstraint("digest_id", name=op.f("uq_digest_copies_digest_id")),
    )
    op.create_index(
        op.f("ix_digest_copies_subscriber_id"), "digest_copies", ["subscriber_id"], unique=False
    )
    op.create_index(
        op.f("ix_digest_copies_expires_at"), "digest_copies", ["expires_at"], unique=False
    )

    op.create_table(
        "rate_hits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_hits")),
    )
    op.create_index(op.f("ix_rate_hits_at"), "rate_hits", ["at"], unique=False)
    op.create_index("ix_rate_hits_scope_key_at", "rate_hits", ["scope", "key", "at"])


def downgrade() -> None:
    op.drop_index("ix_rate_hits_scope_key_at", table_name="rate_hits")
    op.drop_index(op.f("ix_rate_hits_at"), table_name="rate_hits")
    op.drop_table("rate_hits")
    op.drop_index(op.f("ix_digest_copies_expires_at"), table_name="digest_copies")
    op.drop_index(op.f("ix_digest_copies_subscriber_id"), table_name="digest_copies")
    op.drop_table("digest_copies")
