"""Leases in the database: short locks that survive Redis restarts and expire on crashes.

A lease is a row ``(name, owner, until)``. Taking it is one statement — insert, or take
over a row whose lease has run out — so two workers can never both hold it, on SQLite or
PostgreSQL. A worker that dies holding a lease blocks that name until ``until`` passes.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.dialects import postgresql, sqlite

from bridge.db import session
from bridge.models import Lock, utcnow


def acquire(engine: Engine, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while someone else holds it."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    table = Lock.__table__  # type: ignore[attr-defined]
    stmt = (
        dialect.insert(table)
        .values(name=name, owner=owner, until=until)
        .on_conflict_do_update(
            index_elements=["name"],
            set_={"owner": owner, "until": until},
            where=(table.c.until < now) | (table.c.owner == owner),
        )
        .returning(table.c.name)
    )
    with session(engine) as s:
        # RETURNING yields the row only when it was inserted or taken over.
        return s.execute(stmt).scalar_one_or_none() is not None


def release(engine: Engine, name: str, owner: str) -> None:
    table = Lock.__table__  # type: ignore[attr-defined]
    with session(engine) as s:
        s.execute(delete(table).where(table.c.name == name, table.c.owner == owner))
