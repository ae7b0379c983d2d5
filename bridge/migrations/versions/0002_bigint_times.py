"""unix times in BIGINT: intent.occurred_at, license.block_decided_at

PostgreSQL's INTEGER stops at 2**31 - 1 (2038-01-19): an event created later was
answered 503 on every delivery. SQLite's INTEGER is already 64 bits, so only PostgreSQL
changes (a table rewrite under an exclusive lock: run it in a quiet moment).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (("intent", "occurred_at", False), ("license", "block_decided_at", True))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in _COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.BigInteger(),
            existing_type=sa.Integer(),
            existing_nullable=nullable,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in _COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.Integer(),
            existing_type=sa.BigInteger(),
            existing_nullable=nullable,
        )
