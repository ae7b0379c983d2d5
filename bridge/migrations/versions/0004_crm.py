"""CRM deals: when the license's customer was last decided (provider time)

A deal's contact or company may change several times, and HubSpot does not order its
events: a customer change applies only when newer than the last one applied.

Revision ID: 0004_crm
Revises: 0003
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_crm"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("license", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_decided_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("license", schema=None) as batch_op:
        batch_op.drop_column("customer_decided_at")
