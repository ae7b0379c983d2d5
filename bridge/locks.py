"""Leases in the database: short locks that survive Redis restarts and expire on crashes.

A lease is a row ``(name, owner, until)``. Taking it is one statement — insert, or take
over a row whose lease has run out — so two workers can never both hold it, on SQLite or
PostgreSQL. A worker that dies holding a lease blocks that name until ``until`` passes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from bridge.db import transaction
from bridge.models import Lock, utcnow

_table: Any = Lock.__table__  # type: ignore[attr-defined]


def _take_statement(dialect: Any) -> Any:
    return (
        dialect.insert(_table)
        .values(name=bindparam("name"), owner=bindparam("owner"), until=bindparam("until"))
        .on_conflict_do_update(
            index_elements=["name"],
            set_={"owner": bindparam("owner"), "until": bindparam("until")},
            where=(_table.c.until < bindparam("now")) | (_table.c.owner == bindparam("owner")),
        )
        .returning(_table.c.name)
    )


# Built once: constructing a statement costs more than running a compiled one.
_TAKE = {"sqlite": _take_statement(sqlite), "postgresql": _take_statement(postgresql)}
_DROP = delete(_table).where(
    _table.c.name == bindparam("name"), _table.c.owner == bindparam("owner")
)


def _dialect_name(conn: Connection | Session) -> str:
    if isinstance(conn, Session):
        return conn.get_bind().dialect.name
    return conn.dialect.name


def take(conn: Connection | Session, name: str, owner: str, seconds: float) -> bool:
    """Inside a transaction: take or renew the lease ``name`` for ``owner``."""
    now = utcnow()
    params = {"name": name, "owner": owner, "until": now + timedelta(seconds=seconds), "now": now}
    stmt = _TAKE["postgresql" if _dialect_name(conn) == "postgresql" else "sqlite"]
    # RETURNING yields the row only when it was inserted or taken over.
    return conn.execute(stmt, params).scalar_one_or_none() is not None


def drop(conn: Connection | Session, name: str, owner: str) -> None:
    """Inside a transaction: release ``name`` if ``owner`` holds it."""
    conn.execute(_DROP, {"name": name, "owner": owner})


def acquire(engine: Engine, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while someone else holds it."""
    with transaction(engine) as conn:
        return take(conn, name, owner, seconds)


def release(engine: Engine, name: str, owner: str) -> None:
    with transaction(engine) as conn:
        drop(conn, name, owner)
