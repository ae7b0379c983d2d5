"""Leases in the database: short locks that survive Redis restarts and expire on crashes.

A lease is a row ``(name, owner, until)``. Taking it is one statement — insert, or take
over a row whose lease has run out — so two workers can never both hold it, on SQLite or
PostgreSQL. A worker that dies holding a lease blocks that name until ``until`` passes.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from bridge.db import session
from bridge.models import Lock, utcnow


def take(s: Session, name: str, owner: str, seconds: float) -> bool:
    """Inside a transaction: take or renew the lease ``name`` for ``owner``."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    bind = s.get_bind()
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
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
    # RETURNING yields the row only when it was inserted or taken over.
    return s.execute(stmt).scalar_one_or_none() is not None


def drop(s: Session, name: str, owner: str) -> None:
    """Inside a transaction: release ``name`` if ``owner`` holds it."""
    table = Lock.__table__  # type: ignore[attr-defined]
    s.execute(delete(table).where(table.c.name == name, table.c.owner == owner))


def acquire(engine: Engine, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while someone else holds it."""
    with session(engine) as s:
        return take(s, name, owner, seconds)


def release(engine: Engine, name: str, owner: str) -> None:
    with session(engine) as s:
        drop(s, name, owner)
