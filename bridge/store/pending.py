"""The relay's work list: the intents a worker should (re)try now."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import col, select

from bridge.core.intents import Status
from bridge.store.db import session
from bridge.store.tables import Intent


def pending_intents(engine: Engine, limit: int = 1000, *, now: datetime) -> list[str]:
    """Intents a worker should (re)try at ``now`` (the runtime's time, which leases run
    on): pending ones, and running ones whose lease has run out. The relay's work list."""
    with session(engine) as s:
        stmt = (
            select(col(Intent.id))
            .where(col(Intent.status) == Status.PENDING.value)
            .order_by(col(Intent.created_at))
            .limit(limit)
        )
        ids = list(s.execute(stmt).scalars())
        stale = (
            select(col(Intent.id))
            .where(col(Intent.status) == Status.RUNNING.value)
            .where(col(Intent.lease_until) < now)
            .limit(limit)
        )
        ids.extend(s.execute(stale).scalars())
        return ids
