"""The ``lock`` table: leases in the database, short locks that survive Redis restarts
and expire on crashes; and the renewal of all of a run's leases.

A lease is a row ``(name, owner, until)``. Taking it is one statement — insert, or take
over a row whose lease has run out — so two workers can never both hold it, on SQLite or
PostgreSQL. A worker that dies holding a lease blocks that name until ``until`` passes.

Leases run on the caller's clock (the worker's ``Runtime.now()``): every function takes
``now``, so a test sets the time instead of waiting for a lease to run out.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine

from bridge.store.dbapi import Sql, Tx, tx

# RETURNING yields the row only when it was inserted or taken over.
_TAKE = Sql(
    """INSERT INTO lock (name, owner, until) VALUES (:name, :owner, :until)
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
    WHERE lock.until < :now OR lock.owner = :owner RETURNING name"""
)
_DROP = Sql("DELETE FROM lock WHERE name = :name AND owner = :owner")
_RENEW = Sql("UPDATE lock SET until = :until WHERE name = :name AND owner = :owner")
# An intent's own lease (``intent.lease_owner``, taken by its claim) renews with the rest.
_RENEW_INTENT = Sql(
    """UPDATE intent SET lease_until = :until WHERE id = :id AND lease_owner = :owner
    AND status = 'running'"""
)


def license_lock(ref: str) -> str:
    """The lease a run holds on its license (effects on one license never overlap)."""
    return f"license:{ref}"


def take(t: Tx, name: str, owner: str, seconds: float, now: datetime) -> bool:
    """Inside a transaction: take or renew the lease ``name`` for ``owner`` at ``now``."""
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


def acquire(engine: Engine, name: str, owner: str, seconds: float, *, now: datetime) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while someone else holds it."""
    with tx(engine) as t:
        return take(t, name, owner, seconds, now)


def release(engine: Engine, name: str, owner: str) -> None:
    with tx(engine) as t:
        drop(t, name, owner)


def renew_leases(
    engine: Engine,
    intent_id: str,
    owner: str,
    names: list[str],
    seconds: float,
    companions: tuple[str, ...] = (),
    *,
    now: datetime,
) -> list[str] | None:
    """Extend the run's intent lease (and its companions', ``Claimed.companions``) and
    its named leases. None if an intent is no longer the run's, else the names it no
    longer holds (released meanwhile, or lost)."""
    until = now + timedelta(seconds=seconds)
    with tx(engine) as t:
        at = t.time(until)
        for id_ in (intent_id, *companions):
            if t.run(_RENEW_INTENT, {"id": id_, "owner": owner, "until": at}) != 1:
                return None
        return [
            name
            for name in names
            if t.run(_RENEW, {"name": name, "owner": owner, "until": at}) != 1
        ]
