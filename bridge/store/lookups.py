"""Reads of the ``intent`` table: an intent's row for its claim, the companions a batch
may take along, and what a license's intents say (its blocks, its checkout session).

Writes are ``bridge.store.intents``'s alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from bridge.core import blocks
from bridge.core.intents import Effect, Status
from bridge.store import licenses
from bridge.store.dbapi import Sql, Tx, tx
from bridge.store.licenses import NAMED_BY_REF

# The hot paths run plain SQL on the driver's cursor (bridge.store.dbapi): through
# SQLAlchemy's execution layer they cost several times what the database takes to run
# them. Rare paths keep the ORM.
_GET = Sql(
    """SELECT effect, license_ref, params, occurred_at, status, attempts, lease_until,
    next_attempt_at, created_at FROM intent WHERE id = :id {for_update}"""
)
_PARAMS = Sql("SELECT params FROM intent WHERE id = :id")
_REF = Sql("SELECT license_ref FROM intent WHERE id = :id")

# The other due REGISTER_EVENT intents of a license (under its ref or an alias) that no
# run holds, whose earlier call, if any, is settled, and that were never in a refused
# call (a refused batch is sent again event by event, each alone): a lead's companions.
# PostgreSQL: rows another claim holds (its lead, or its own companions) are passed over,
# not waited for: two leads of one key would otherwise each wait for the other's.
_DUE_EVENTS = Sql(
    """SELECT id, license_ref, params, occurred_at, attempts, created_at, updated_at
    FROM intent WHERE effect = 'register_event' AND status = 'pending' AND id <> :lead
    AND (next_attempt_at IS NULL OR next_attempt_at <= :due)"""  # noqa: S608
    f" AND {NAMED_BY_REF}"
    """ AND NOT EXISTS (SELECT 1 FROM attempt WHERE attempt.intent_id = intent.id
    AND (attempt.outcome IS NULL OR attempt.outcome IN ('unknown', 'refused')))
    ORDER BY id LIMIT :limit {skip_locked}"""
)
# The other due intents of one myTracker effect, of any license (myTracker batches are
# per app), that no run holds and that never had a call refused or left unresolved: a
# batch refused for one bad item is sent again item by item, each alone.
_DUE_TRACKS = Sql(
    """SELECT id, license_ref, params, occurred_at, attempts, created_at, updated_at
    FROM intent WHERE effect = :effect AND status = 'pending' AND id <> :lead
    AND (next_attempt_at IS NULL OR next_attempt_at <= :due)
    AND NOT EXISTS (SELECT 1 FROM attempt WHERE attempt.intent_id = intent.id
    AND (attempt.outcome IS NULL OR attempt.outcome IN ('unknown', 'refused')))
    ORDER BY id LIMIT :limit {skip_locked}"""
)
# A license's block and unblock intents, under its ref or an alias, whatever their status:
# an ending block holds from the moment it is stored (bridge.core.blocks).
_BLOCK_INTENTS = Sql(
    "SELECT id, effect, params, occurred_at FROM intent WHERE effect IN ('block', 'unblock')"  # noqa: S608
    f" AND {NAMED_BY_REF} ORDER BY id"
)


@dataclass(frozen=True)
class IntentRow:
    """An intent's row as a claim reads it (locked, on PostgreSQL)."""

    effect: Effect
    license_ref: str
    params: str  # JSON
    occurred_at: int
    status: Status
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime | None


@dataclass(frozen=True)
class DueRow:
    """A due intent a lead's run may take along (see ``bridge.store.claims``)."""

    id: str
    license_ref: str
    params: str  # JSON
    occurred_at: int
    attempts: int
    created_at: datetime | None
    seen: Any  # updated_at as stored: the take succeeds only if it is unchanged


def get(t: Tx, intent_id: str) -> IntentRow | None:
    row = t.one(_GET, {"id": intent_id})
    if row is None:
        return None
    effect, license_ref, params, occurred_at, status, attempts_, until, next_at, created = row
    return IntentRow(
        Effect(effect),
        license_ref,
        params,
        occurred_at,
        Status(status),
        attempts_,
        t.read_time(until),
        t.read_time(next_at),
        t.read_time(created),
    )


def due(t: Tx, effect: Effect, lead: str, ref: str, due_at: datetime, limit: int) -> list[DueRow]:
    """The intents a lead's run may send with its own: the license's due events
    (``_DUE_EVENTS``), or any license's due myTracker items of the effect (``_DUE_TRACKS``)."""
    if effect is Effect.REGISTER_EVENT:
        query = {"lead": lead, "ref": ref, "due": t.time(due_at), "limit": limit}
        rows = t.all(_DUE_EVENTS, query)
    else:
        query = {"lead": lead, "effect": effect.value, "due": t.time(due_at), "limit": limit}
        rows = t.all(_DUE_TRACKS, query)
    return [
        DueRow(id_, license_ref, params, occurred_at, attempts_, t.read_time(created), seen)
        for id_, license_ref, params, occurred_at, attempts_, created, seen in rows
    ]


def intent_ref(engine: Engine, intent_id: str) -> str | None:
    """The license ref an intent applies to, aliases resolved."""
    with tx(engine) as t:
        row = t.one(_REF, {"id": intent_id})
        return None if row is None else licenses.resolve(t, row[0])


def checkout_session(engine: Engine, ref: str) -> str | None:
    """The checkout session that bought license ``ref`` (aliases resolved), as its key
    creation names it; None if the bridge never saw the purchase."""
    with tx(engine) as t:
        row = t.one(_PARAMS, {"id": f"{licenses.resolve(t, ref)}:create_key"})
    if row is None:
        return None
    session = json.loads(row[0]).get("checkout_session")
    return session if isinstance(session, str) else None


def block_intents(engine: Engine, ref: str) -> list[blocks.Stored]:
    """The license's stored block and unblock intents (``bridge.core.blocks``)."""
    with tx(engine) as t:
        return [
            blocks.Stored.of(id_, Effect(effect), json.loads(params), occurred_at)
            for id_, effect, params, occurred_at in t.all(_BLOCK_INTENTS, {"ref": ref})
        ]
