"""Waking: intents parked ``waiting`` for their license's key become ``pending`` again.

A claim parks an intent whose license has no key yet (``bridge.store.claims``); the
key's creation wakes the license's waiting intents in the transaction that ends its run
(``bridge.store.intents.finish``), or those that need no license lease the moment the key
exists (:func:`wake_lease_free`); the relay wakes any whose key arrived another way
(:func:`wake_ready_waiting`). Only a waiting intent is ever woken.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from bridge.core.intents import Status
from bridge.store.db import session
from bridge.store.dbapi import Sql, Tx, tx
from bridge.store.licenses import NAMED_BY_REF
from bridge.store.tables import Intent, License, LicenseAlias, utcnow

_WAITING = Sql(f"SELECT id FROM intent WHERE status = 'waiting' AND {NAMED_BY_REF} ORDER BY id")  # noqa: S608
# Only a waiting intent is woken: one read as waiting a moment ago may have been woken,
# run and finished since (PostgreSQL's READ COMMITTED), and must not be run again.
_UNPARK = Sql(
    "UPDATE intent SET status = 'pending', updated_at = :now WHERE id = :id AND status = 'waiting'"
)
_WAITING_LEASE_FREE = Sql(
    "SELECT id FROM intent WHERE status = 'waiting' AND effect IN ('register_event',"  # noqa: S608
    f" 'record_usage') AND {NAMED_BY_REF} ORDER BY id"
)


def wake(t: Tx, ref: str, waiting: Sql = _WAITING) -> list[str]:
    """Waiting intents of a license (under its ref or an alias) that ``waiting`` selects
    become pending again; returns those still waiting when woken (see ``_UNPARK``)."""
    now = t.time(utcnow())
    return [
        id_
        for (id_,) in t.all(waiting, {"ref": ref})
        if t.run(_UNPARK, {"id": id_, "now": now}) == 1
    ]


def wake_lease_free(engine: Engine, ref: str) -> list[str]:
    """The license's waiting intents that need no license lease
    (``bridge.store.claims.LEASE_FREE_EFFECTS``) become pending: the moment its key
    exists, before the key's run has ended."""
    with tx(engine) as t:
        return wake(t, ref, _WAITING_LEASE_FREE)


def wake_ready_waiting(engine: Engine, limit: int = 1000) -> list[str]:
    """Waiting intents whose license now has a key (an alias may have arrived late).

    One query joins them to their license: a pile of intents that wait for a key that
    may never come (a CRM deal lost before it was ever won) costs nothing here and
    never hides the ready ones behind the limit."""
    with session(engine) as s:
        ref = func.coalesce(col(LicenseAlias.ref), col(Intent.license_ref))
        ready = list(
            s.execute(
                select(col(Intent.id))
                .outerjoin(LicenseAlias, col(LicenseAlias.alias) == col(Intent.license_ref))
                .join(License, col(License.ref) == ref)
                .where(col(Intent.status) == Status.WAITING.value)
                .where(col(License.key).is_not(None))
                .order_by(col(Intent.id))
                .limit(limit)
            ).scalars()
        )
        return _make_pending(s, ready)


def _make_pending(s: Session, ids: list[str]) -> list[str]:
    """Those of ``ids`` still waiting become pending (see ``_UNPARK``); returns them."""
    if not ids:
        return []
    woken = s.execute(
        update(Intent)
        .where(col(Intent.id).in_(ids), col(Intent.status) == Status.WAITING.value)
        .values(status=Status.PENDING.value, updated_at=utcnow())
        .returning(col(Intent.id))
    )
    return list(woken.scalars())
