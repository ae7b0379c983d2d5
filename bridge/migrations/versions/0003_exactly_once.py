"""exactly once under reordering: sticky license ends, start hints

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("license", schema=None) as batch_op:
        # The block that ended the license (canceled, refund, dispute): never lifted,
        # never overwritten by a payment-status block, whatever the order of deliveries.
        batch_op.add_column(sa.Column("ended_by", sa.String(length=30), nullable=True))
    op.execute(
        "UPDATE license SET ended_by = block_reason"
        " WHERE block_reason IN ('canceled', 'refund', 'dispute')"
    )

    op.create_table(
        "start_hint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("intent_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["intent_id"], ["intent.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("intent_id", "event_id", name="uq_start_hint_intent_event"),
    )


def downgrade() -> None:
    op.drop_table("start_hint")
    with op.batch_alter_table("license", schema=None) as batch_op:
        batch_op.drop_column("ended_by")
