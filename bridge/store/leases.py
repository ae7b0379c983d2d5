"""Leases in the database: short locks that survive Redis restarts and expire on crashes.

A lease is a row ``(name, owner, until)``. Taking it is one statement — insert, or take
over a row whose lease has run out — so two workers can never both hold it, on SQLite or
PostgreSQL. A worker that dies holding a lease blocks that name until ``until`` passes.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from bridge.store.dbapi import Sql, Tx, tx
from bridge.store.tables import utcnow

# RETURNING yields the row only when it was inserted or taken over.
_TAKE = Sql(
    """INSERT INTO lock (name, owner, until) VALUES (:name, :owner, :until)
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
    WHERE lock.until < :now OR lock.owner = :owner RETURNING name"""
)
_DROP = Sql("DELETE FROM lock WHERE name = :name AND owner = :owner")


def take(t: Tx, name: str, owner: str, seconds: float) -> bool:
    """Inside a transaction: take or renew the lease ``name`` for ``owner``."""
    now = utcnow()
    params = {
        "name": name,
        "owner": owner,
        "until": t.time(now + timedelta(seconds=seconds)),
        "now": t.time(now),
    }
    return t.one(_TAKE, params) is not None


def drop(t: Tx, name: str, owner: str) -> None:
    """Inside a transaction: release ``name`` if ``owner`` holds it."""
    t.run(_DROP, {"name": name, "owner": owner})


def acquire(engine: Engine, name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while someone else holds it."""
    with tx(engine) as t:
        return take(t, name, owner, seconds)


def release(engine: Engine, name: str, owner: str) -> None:
    with tx(engine) as t:
        drop(t, name, owner)
