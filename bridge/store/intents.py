"""The ``intent`` table: the intent state machine, each step one short transaction.

Intent status moves only through this module (and the claim, ``bridge.store.claims``,
and waking, ``bridge.store.wake``, which call it or write only ``waiting -> pending``),
so the rules live in one place. Every intent row is inserted here too (a delivery's:
:func:`insert_new`; a usage aggregate's: :func:`insert_report`); reads are in
``bridge.store.lookups``. The rules:

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

import orjson
from sqlalchemy import Engine, update
from sqlmodel import col

from bridge.core.intents import Effect, IntentSpec, Status
from bridge.store import attempts, leases, licenses
from bridge.store.db import session
from bridge.store.dbapi import Sql, Tx, insert_rows, tx
from bridge.store.errors import NotReplayable, UnknownIntent
from bridge.store.lookups import DueRow
from bridge.store.tables import Intent, utcnow
from bridge.store.wake import wake as wake_license

if TYPE_CHECKING:
    from bridge.store.claims import Claimed

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
# Taken only if unchanged since it was read (every status change writes updated_at), so
# an intent another run claimed, or claimed, sent and put back meanwhile with an attempt
# now unresolved, is never taken; SQLite's BEGIN IMMEDIATE serializes the claims outright.
_TAKE = Sql(
    """UPDATE intent SET status = 'running', lease_owner = :owner, lease_until = :until,
    updated_at = :now WHERE id = :id AND status = 'pending' AND updated_at = :seen"""
)


@dataclass
class Outcome:
    """What a run learned, written with its final status in one transaction."""

    attempts: dict[int, str] = field(default_factory=dict)  # attempt id -> outcome
    license: dict[str, Any] = field(default_factory=dict)  # License column -> value
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # companion -> result


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


# -- new intents: a delivery's (bridge.store.inbox), a usage aggregate's (bridge.store.ledger)

_PENDING, _WAITING = Status.PENDING.value, Status.WAITING.value


def params_json(params: dict[str, Any]) -> str:
    """An intent's params as stored: compact JSON, keys sorted (orjson: a tenth of the
    standard library's time, and the same value when read back)."""
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()


def insert_new(
    t: Tx, specs: list[tuple[IntentSpec, int | None]], now: Any
) -> tuple[set[str], set[str]]:
    """Insert the intents (with the event that implied each) that are not stored yet;
    returns the ids inserted, and those of them stored waiting. ``now`` as stored.

    An intent on a license whose key a new intent creates is stored waiting: sent to a
    worker now it would only find no key and park itself; the key's job runs it the
    moment the key exists. Only when the creating intent is new in this very
    transaction: then it cannot have finished, and its end is what wakes them. So key
    creations are inserted first, the rest after with the status that follows. (A given
    id is always one or the other, so every transaction still takes the locks in one
    order: key creations by id, then the rest by id.)
    """
    creations = [(s, e) for s, e in specs if s.effect is Effect.CREATE_KEY]
    rest = [(s, e) for s, e in specs if s.effect is not Effect.CREATE_KEY]
    inserted = _insert_rows(t, creations, now, frozenset())
    creating = frozenset(s.license_ref for s, _ in creations if s.id in inserted)
    inserted_rest = _insert_rows(t, rest, now, creating)
    waiting = {s.id for s, _ in rest if s.license_ref in creating and s.id in inserted_rest}
    return inserted | inserted_rest, waiting


def _insert_rows(
    t: Tx,
    specs: list[tuple[IntentSpec, int | None]],
    now: Any,
    waiting_on: frozenset[str],
) -> set[str]:
    rows = sorted(
        (
            spec.id,
            spec.effect.value,
            spec.license_ref,
            params_json(spec.params),
            spec.occurred_at,
            _WAITING if spec.license_ref in waiting_on else _PENDING,
            0,
            event_id,
            now,  # created_at
            now,  # updated_at
        )
        for spec, event_id in specs
    )
    returned = insert_rows(
        t,
        "INSERT INTO intent (id, effect, license_ref, params, occurred_at, status, attempts,"
        " event_id, created_at, updated_at)",
        rows,
        "ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    return {id_ for (id_,) in returned}


def due_now(t: Tx, ids: set[str]) -> None:
    """The pending ones of ``ids`` are due at once (a new start hint may end a wait)."""
    if not ids:
        return
    marks = ",".join([t.mark] * len(ids))  # placeholders; the ids are bound
    t.cursor.execute(
        f"UPDATE intent SET next_attempt_at = NULL WHERE status = 'pending' AND id IN ({marks})",  # noqa: S608
        sorted(ids),
    )


_NEW_REPORT = Sql(
    """INSERT INTO intent (id, effect, license_ref, params, occurred_at, status, attempts,
    created_at, updated_at, next_attempt_at) VALUES (:id, :effect, :ref, :params,
    :occurred_at, 'pending', 0, :now, :now, :due) ON CONFLICT (id) DO NOTHING"""
)


def insert_report(t: Tx, values: dict[str, Any], ref: str, due: datetime, now: datetime) -> None:
    """The intent that reports a usage aggregate (``values``: its row), due at ``due``."""
    params = {
        "aggregate": values["id"],
        "product_id": values["product_id"],
        "key": values["key"],
        "meter": values["meter"],
        "window_start": values["window_start"],
        "window_seconds": values["window_seconds"],
        "sink": values["sink"],
    }
    t.run(
        _NEW_REPORT,
        {
            "id": values["id"],
            "effect": Effect.REPORT_USAGE.value,
            "ref": ref,
            "params": json.dumps(params, sort_keys=True, separators=(",", ":")),
            "occurred_at": values["window_start"],
            "now": t.time(now),
            "due": t.time(due),
        },
    )


# -- an operator's replay (``replay``, the admin page) -------------------------------------

REPLAYABLE = frozenset({Status.FAILED.value, Status.NEEDS_REVIEW.value})
_STATE = Sql("SELECT status, effect, license_ref FROM intent WHERE id = :id {for_update}")
_AFRESH = Sql(
    """UPDATE intent SET status = 'pending', attempts = 0, next_attempt_at = NULL,
    lease_owner = NULL, lease_until = NULL, updated_at = :now WHERE id = :id"""
)


def replay(engine: Engine, intent_id: str, *, key: str | None = None) -> None:
    """A failed or needs_review intent pending again, its attempts forgotten; ``key``
    (a key creation's: the key a person found) is its license's from now on. Raises
    NotReplayable, or KeyHeld (another license holds ``key``), changing nothing."""
    with tx(engine) as t:
        row = t.one(_STATE, {"id": intent_id})
        if row is None:
            raise UnknownIntent(f"no intent {intent_id}")
        status, effect, ref = row
        if status not in REPLAYABLE:
            raise NotReplayable(
                f"{intent_id} is {status}; only failed or needs_review intents are replayed"
            )
        creation = effect == Effect.CREATE_KEY.value
        if key is not None:
            if not creation:
                raise NotReplayable("--key is for create_key intents")
            licenses.give_key(t, licenses.resolve(t, ref), key)
        elif status == Status.NEEDS_REVIEW.value and creation:
            raise NotReplayable(
                "a key creation needs --key KEY (the key you found is this license's) so "
                "that no second key is made"
            )
        t.run(_AFRESH, {"id": intent_id, "now": t.time(utcnow())})
