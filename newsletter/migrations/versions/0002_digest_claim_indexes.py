"""indexes for claiming digests in id order and finding live leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:45:00

Claiming the next batch sorted every pending digest by id (and looking for dead lease
holders read every pending digest), so a send of N digests cost O(N^2) on the
database. With (status, id) the claim reads the first free rows in order and stops;
with (status, lease_until) only the leased ones are read.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("digests", schema=None) as batch_op:
        batch_op.create_index("ix_digests_status_id", ["status", "id"], unique=False)
        batch_op.create_index("ix_digests_status_lease", ["status", "lease_until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("digests", schema=None) as batch_op:
        batch_op.drop_index("ix_digests_status_lease")
        batch_op.drop_index("ix_digests_status_id")
