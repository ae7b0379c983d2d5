"""retention: when a delivery's body was pruned, an index of those still to prune, and
the intents and start hints of a delivery found by index (retention asks per delivery)

Revision ID: 0008_retention
Revises: 0007_admin_sessions
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_retention"
down_revision = "0007_admin_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "webhook_event", sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_webhook_event_unpruned",
        "webhook_event",
        ["received_at"],
        sqlite_where=sa.text("pruned_at IS NULL"),
        postgresql_where=sa.text("pruned_at IS NULL"),
    )
    op.create_index("ix_intent_event_id", "intent", ["event_id"])
    op.create_index("ix_start_hint_event_id", "start_hint", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_start_hint_event_id", table_name="start_hint")
    op.drop_index("ix_intent_event_id", table_name="intent")
    op.drop_index("ix_webhook_event_unpruned", table_name="webhook_event")
    with op.batch_alter_table("webhook_event") as batch:
        batch.drop_column("pruned_at")
