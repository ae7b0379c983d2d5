"""operations: a bounded log of refused and duplicate deliveries, counts by cause

Revision ID: 0004_admin
Revises: 0004_crm
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_admin"
down_revision = "0004_crm"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("cause", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_delivery_log_received_at", "delivery_log", ["received_at"])
    op.create_table(
        "delivery_count",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("cause", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "cause"),
    )


def downgrade() -> None:
    op.drop_table("delivery_count")
    op.drop_index("ix_delivery_log_received_at", table_name="delivery_log")
    op.drop_table("delivery_log")
