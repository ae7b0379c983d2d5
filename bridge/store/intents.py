"""The ``intent`` table: the intent state machine, each step one short transaction.

Intent status moves only through this module (and the claim, ``bridge.store.claims``,
and waking, ``bridge.store.wake``, which call it or write only ``waiting -> pending``),
so the rules live in one place:

- a claim is a lease on the intent *and* on its license, taken in one transaction
  (effects on one license never run concurrently); an intent whose license has no key
  yet is parked as waiting in that same transaction;
- an attempt row is committed before its Cryptolens call is sent
  (``bridge.store.attempts``);
- a run's outcome — the intent's status and result, the attempts it settled, what it
  learned about the license, the release of the license lease, and the waiting intents
  a new key wakes — is written in one transaction at the end (:func:`finish`).

Few, larger transactions are what keeps a worker fast: every commit is a round trip
(PostgreSQL) or a WAL append under the one writer lock (SQLite).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, update
from sqlmodel import col

from bridge.core import blocks
from bridge.core.intents import Effect, Status
from bridge.store import attempts, leases, licenses
from bridge.store.db import session
from bridge.store.dbapi import Sql, Tx, tx
from bridge.store.licenses import NAMED_BY_REF
from bridge.store.tables import Intent, utcnow
from bridge.store.wake import wake as wake_license

if TYPE_CHECKING:
    from bridge.store.claims import Claimed

# The hot paths run plain SQL on the driver's cursor (bridge.store.dbapi): through
# SQLAlchemy's execution layer they cost several times what the database takes to run
# them. Rare paths keep the ORM.
_GET = Sql(
    """SELECT effect, license_ref, params, occurred_at, status, attempts, lease_until,
    next_attempt_at, created_at FROM intent WHERE id = :id {for_update}"""
)
_PARAMS = Sql("SELECT params FROM intent WHERE id = :id")
_REF = Sql("SELECT license_ref FROM intent WHERE id = :id")
_OWNED = Sql(
    """SELECT attempts FROM intent WHERE id = :id AND lease_owner = :owner
    AND status = 'running' {for_update}"""
)
_RUN = Sql(
    """UPDATE intent SET status = 'running', lease_owner = :owner, lease_until = :until,
    updated_at = :now WHERE id = :id"""
)
_PARK = Sql("UPDATE intent SET status = 'waiting', updated_at = :now WHERE id = :id")
_END = Sql(
    """UPDATE intent SET status = :status, attempts = :attempts, last_error = :error,
    result = COALESCE(:result, result), lease_owner = NULL, lease_until = NULL,
    next_attempt_at = :next_at, updated_at = :now WHERE id = :id"""
)
# Back to pending: an error of None keeps the last one.
_AGAIN = Sql(
    """UPDATE intent SET status = :status, attempts = :attempts,
    last_error = COALESCE(:error, last_error), result = COALESCE(:result, result),
    lease_owner = NULL, lease_until = NULL, next_attempt_at = :next_at, updated_at = :now
    WHERE id = :id"""
)
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
# Taken only if unchanged since it was read (every status change writes updated_at), so
# an intent another run claimed, or claimed, sent and put back meanwhile with an attempt
# now unresolved, is never taken; SQLite's BEGIN IMMEDIATE serializes the claims outright.
_TAKE = Sql(
    """UPDATE intent SET status = 'running', lease_owner = :owner, lease_until = :until,
    updated_at = :now WHERE id = :id AND status = 'pending' AND updated_at = :seen"""
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


@dataclass
class Outcome:
    """What a run learned, written with its final status in one transaction."""

    attempts: dict[int, str] = field(default_factory=dict)  # attempt id -> outcome
    license: dict[str, Any] = field(default_factory=dict)  # License column -> value
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # companion -> result


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


def run(t: Tx, intent_id: str, owner: str, until: datetime, now: datetime) -> None:
    """``pending`` (or a lapsed ``running``) -> ``running``, under ``owner``'s lease."""
    params = {"id": intent_id, "owner": owner, "until": t.time(until), "now": t.time(now)}
    t.run(_RUN, params)


def park(t: Tx, intent_id: str, now: datetime) -> None:
    """-> ``waiting``, until its license's key exists (``bridge.store.wake``)."""
    t.run(_PARK, {"id": intent_id, "now": t.time(now)})


def take(t: Tx, row: DueRow, owner: str, until: datetime, now: datetime) -> bool:
    """A due companion -> ``running`` under ``owner``, if unchanged since it was read."""
    taking = {
        "id": row.id,
        "owner": owner,
        "until": t.time(until),
        "now": t.time(now),
        "seen": row.seen,
    }
    return t.run(_TAKE, taking) == 1


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


def owned(t: Tx, intent_id: str, owner: str) -> int | None:
    """The intent's attempt count if this run still owns it (else another worker, or a
    person, has taken it over, and the run must leave it alone)."""
    row = t.one(_OWNED, {"id": intent_id, "owner": owner})
    return None if row is None else int(row[0])


def _settle(t: Tx, claimed: Claimed, outcome: Outcome) -> None:
    for attempt_id, result in outcome.attempts.items():
        attempts.settle(t, attempt_id, result)
    licenses.learn(t, claimed.ref, outcome.license)


def _end(
    t: Tx,
    intent_id: str,
    status: Status,
    attempts_: int,
    *,
    error: str | None,
    result: dict[str, Any] | None = None,
    next_at: datetime | None = None,
) -> None:
    t.run(
        _AGAIN if status is Status.PENDING else _END,
        {
            "id": intent_id,
            "status": status.value,
            "attempts": attempts_,
            "error": error,
            "result": None if result is None else json.dumps(result, sort_keys=True),
            "next_at": t.time(next_at),
            "now": t.time(utcnow()),
        },
    )


def finish(
    engine: Engine,
    claimed: Claimed,
    status: Status,
    outcome: Outcome,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    wake: bool = False,
    shared: bool = True,
) -> list[str] | None:
    """End the run: status, result, settled attempts, license facts, lease released.

    The run's companions end with it: with its status (and each its own result from
    ``outcome.results``); unless ``shared`` is False (the run gave up after its own
    attempts: theirs are not spent), when they go back to pending, counted.

    Returns the waiting intents this run woke (``wake``: a key now exists), or None when
    the run had lost its intent and wrote nothing.
    """
    with tx(engine) as t:
        leases.drop(t, leases.license_lock(claimed.ref), claimed.owner)
        count = owned(t, claimed.id, claimed.owner)
        if count is None:
            return None
        _settle(t, claimed, outcome)
        _end(t, claimed.id, status, count + 1, error=error, result=result)
        for companion in claimed.companions:
            done = owned(t, companion.id, companion.owner)
            if done is not None:
                _end(
                    t,
                    companion.id,
                    status if shared else Status.PENDING,
                    done + 1,
                    error=error,
                    result=outcome.results.get(companion.id),
                )
        return wake_license(t, claimed.ref) if wake else []


def reschedule(
    engine: Engine,
    claimed: Claimed,
    outcome: Outcome,
    *,
    delay: float,
    error: str | None,
    count: bool,
    at: datetime | None = None,
) -> None:
    """Back to pending after ``delay`` seconds from ``at`` (the runtime's time: a start
    wait measured on it must end on it), the license lease released. An ``error`` of
    None keeps the last one."""
    with tx(engine) as t:
        leases.drop(t, leases.license_lock(claimed.ref), claimed.owner)
        done = owned(t, claimed.id, claimed.owner)
        if done is None:
            return
        _settle(t, claimed, outcome)
        next_at = (at or utcnow()) + timedelta(seconds=delay) if delay > 0 else None
        spent = 1 if count else 0
        _end(t, claimed.id, Status.PENDING, done + spent, error=error, next_at=next_at)
        for companion in claimed.companions:  # back with it, on the same terms
            theirs = owned(t, companion.id, companion.owner)
            if theirs is not None:
                _end(t, companion.id, Status.PENDING, theirs + spent, error=error, next_at=next_at)


def release(engine: Engine, claimed: Claimed) -> None:
    """Let go of the license without touching the intent (it is no longer ours)."""
    with tx(engine) as t:
        leases.drop(t, leases.license_lock(claimed.ref), claimed.owner)


def release_companions(engine: Engine, owner: str, ids: list[str]) -> None:
    """Companions a run will not send after all (past a batch's size): back to pending,
    as they were, for their own runs."""
    with tx(engine) as t:
        for id_ in ids:
            count = owned(t, id_, owner)
            if count is not None:
                _end(t, id_, Status.PENDING, count, error=None)


def set_needs_review(engine: Engine, intent_id: str, error: str) -> None:
    with session(engine) as s:
        s.execute(
            update(Intent)
            .where(col(Intent.id) == intent_id)
            .values(
                status=Status.NEEDS_REVIEW.value,
                last_error=error,
                lease_owner=None,
                lease_until=None,
                updated_at=utcnow(),
            )
        )


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
