"""The worker's database operations, each one short transaction.

Intent status moves only through these functions, so the rules live in one place:

- a claim is a lease on the intent *and* on its license, taken in one transaction
  (effects on one license never run concurrently); an intent whose license has no key
  yet is parked as waiting in that same transaction;
- an attempt row is committed before its Cryptolens call is sent;
- a run's outcome — the intent's status and result, the attempts it settled, what it
  learned about the license, the release of the license lease, and the waiting intents
  a new key wakes — is written in one transaction at the end.

Few, larger transactions are what keeps a worker fast: every commit is a round trip
(PostgreSQL) or a WAL append under the one writer lock (SQLite).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from bridge.core import blocks
from bridge.core.intents import TERMINAL, Effect, Status, merge_start
from bridge.store import leases
from bridge.store.db import session
from bridge.store.dbapi import Sql, Tx, tx
from bridge.store.tables import Intent, License, LicenseAlias, utcnow
from jobs.errors import NeedsReview

RUNNING_ELSEWHERE = "running elsewhere"
# How long a job waits before trying a license that another run holds.
BUSY_RETRY = 0.02
# Effects that neither read nor write the license's shared state (its expiry, block
# flag, customer): their read-back is their own intent's (GetEvents by the intent's
# Metadata; RecordUsage has none), so they run beside the license's other effects, under
# their intent's lease alone. A purchase's event is registered while its key is tagged.
SHARED_EFFECTS = frozenset(
    {Effect.REGISTER_EVENT, Effect.RECORD_USAGE, Effect.TRACK_REVENUE, Effect.TRACK_EVENT}
)
# Effects that need no license key (myTracker knows nothing of keys): never parked.
KEYLESS_EFFECTS = frozenset({Effect.TRACK_REVENUE, Effect.TRACK_EVENT})
# At most this many intents go in one call (the lead and its companions, see ``_gather``):
# a backlog drains in calls of a bounded size. myTracker: 20 items a batch.
BATCH_SIZES = {Effect.REGISTER_EVENT: 50, Effect.TRACK_REVENUE: 20, Effect.TRACK_EVENT: 20}

# The hot paths run plain SQL on the driver's cursor (bridge.store.dbapi): through SQLAlchemy's
# execution layer they cost several times what the database takes to run them. Rare
# paths below keep the ORM.
_GET_INTENT = Sql(
    """SELECT effect, license_ref, params, occurred_at, status, attempts, lease_until,
    next_attempt_at, created_at FROM intent WHERE id = :id {for_update}"""
)
_INTENT_PARAMS = Sql("SELECT params FROM intent WHERE id = :id")
_RESOLVE = Sql("SELECT ref FROM license_alias WHERE alias = :alias")
_GET_LICENSE = Sql(
    """SELECT product_id, "key", customer_id, block_decided_at, block_reason, ended_by,
    customer_decided_at FROM license WHERE ref = :ref {for_update}"""
)
_START_HINTS = Sql("SELECT params FROM start_hint WHERE intent_id = :intent_id ORDER BY id")
_RENEW_INTENT = Sql(
    """UPDATE intent SET lease_until = :until WHERE id = :id AND lease_owner = :owner
    AND status = 'running'"""
)
_RENEW_LOCK = Sql("UPDATE lock SET until = :until WHERE name = :name AND owner = :owner")
_INTENT_ATTEMPTS = Sql(
    "SELECT id, method, sent_at, detail, outcome FROM attempt WHERE intent_id = :intent_id"
    " ORDER BY id"
)
_SCOPE_UNRESOLVED = Sql(
    """SELECT attempt.id, attempt.intent_id, attempt.sent_at, attempt.detail,
    attempt.outcome, intent.status, intent.lease_until, intent.lease_owner
    FROM attempt JOIN intent ON intent.id = attempt.intent_id WHERE attempt.scope = :scope
    AND (attempt.outcome IS NULL OR attempt.outcome = 'unknown') ORDER BY attempt.id"""
)
_SCOPE_OPEN = Sql(
    """SELECT id, intent_id, sent_at, detail, method FROM attempt WHERE scope = :scope
    AND (outcome IS NULL OR outcome = 'unknown') ORDER BY id"""
)
_SETTLE_ATTEMPT = Sql(
    "UPDATE attempt SET outcome = :outcome, finished_at = :finished_at WHERE id = :id"
)
_NEW_ATTEMPT = Sql(
    """INSERT INTO attempt (intent_id, method, scope, sent_at, detail)
    VALUES (:intent_id, :method, :scope, :sent_at, :detail) RETURNING id"""
)
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
# A row may already be there: another intent of the license parked on it (a stub, see
# claim), or an earlier creation that made no key.
_NEW_LICENSE = Sql(
    """INSERT INTO license (ref, product_id, template_id, created_by, created_at)
    VALUES (:ref, :product_id, :template_id, :created_by, :created_at)
    ON CONFLICT (ref) DO NOTHING"""
)
_LICENSE_STUB = Sql(
    """INSERT INTO license (ref, created_at) VALUES (:ref, :created_at)
    ON CONFLICT (ref) DO NOTHING"""
)
_LICENSE_TEMPLATE = Sql(
    """UPDATE license SET product_id = :product_id, template_id = :template_id,
    created_by = COALESCE(created_by, :created_by) WHERE ref = :ref"""
)
_LICENSE_KEY = Sql('UPDATE license SET "key" = :key WHERE ref = :ref')
_LICENSE_PRODUCT = Sql(
    "UPDATE license SET product_id = :product_id, template_id = :template_id WHERE ref = :ref"
)
_HOLDERS = Sql('SELECT ref, "key" FROM license WHERE product_id = :product_id AND "key" = :key')
# Candidate keys listed by reviews still open (their attempts settled as ambiguous).
_LISTED = Sql(
    """SELECT attempt.detail FROM attempt JOIN intent ON intent.id = attempt.intent_id
    WHERE attempt.outcome = 'ambiguous' AND intent.status = 'needs_review'
    AND attempt.detail LIKE :pattern"""
)
_ATTEMPT_DETAIL = Sql("SELECT detail FROM attempt WHERE id = :id")
_SET_ATTEMPT_DETAIL = Sql("UPDATE attempt SET detail = :detail WHERE id = :id")
_WAITING = Sql(
    """SELECT id FROM intent WHERE status = 'waiting' AND (license_ref = :ref
    OR license_ref IN (SELECT alias FROM license_alias WHERE ref = :ref)) ORDER BY id"""
)
# Only a waiting intent is woken: one read as waiting a moment ago may have been woken,
# run and finished since (PostgreSQL's READ COMMITTED), and must not be run again.
_UNPARK = Sql(
    "UPDATE intent SET status = 'pending', updated_at = :now WHERE id = :id AND status = 'waiting'"
)
# The other due REGISTER_EVENT intents of a license (under its ref or an alias) that no
# run holds, whose earlier call, if any, is settled, and that were never in a refused
# call (a refused batch is sent again event by event, each alone): a lead's companions.
_DUE_EVENTS = Sql(
    """SELECT id, license_ref, params, occurred_at, attempts, created_at, updated_at
    FROM intent WHERE effect = 'register_event' AND status = 'pending' AND id <> :lead
    AND (next_attempt_at IS NULL OR next_attempt_at <= :due)
    AND (license_ref = :ref OR license_ref IN (SELECT alias FROM license_alias WHERE ref = :ref))
    AND NOT EXISTS (SELECT 1 FROM attempt WHERE attempt.intent_id = intent.id
    AND (attempt.outcome IS NULL OR attempt.outcome IN ('unknown', 'refused')))
    ORDER BY id LIMIT :limit {skip_locked}"""
)
# PostgreSQL: rows another claim holds (its lead, or its own companions) are passed over,
# not waited for: two leads of one key would otherwise each wait for the other's.
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
    """SELECT id, effect, params, occurred_at FROM intent WHERE effect IN ('block', 'unblock')
    AND (license_ref = :ref OR license_ref IN (SELECT alias FROM license_alias WHERE ref = :ref))
    ORDER BY id"""
)
_REFUSED_BEFORE = Sql("SELECT 1 FROM attempt WHERE intent_id = :id AND outcome = 'refused' LIMIT 1")
# Taken only if unchanged since it was read (every status change writes updated_at), so
# an intent another run claimed, or claimed, sent and put back meanwhile with an attempt
# now unresolved, is never taken; SQLite's BEGIN IMMEDIATE serializes the claims outright.
_TAKE = Sql(
    """UPDATE intent SET status = 'running', lease_owner = :owner, lease_until = :until,
    updated_at = :now WHERE id = :id AND status = 'pending' AND updated_at = :seen"""
)
_WAITING_SHARED = Sql(
    """SELECT id FROM intent WHERE status = 'waiting' AND effect IN ('register_event',
    'record_usage') AND (license_ref = :ref
    OR license_ref IN (SELECT alias FROM license_alias WHERE ref = :ref)) ORDER BY id"""
)

# What a run may learn about its license and write with its outcome.
_LICENSE_FACTS = (
    "customer_id",
    "block_decided_at",
    "block_reason",
    "ended_by",
    "customer_decided_at",
)
_LICENSE_UPDATES = {
    columns: Sql(
        # Column names from the fixed tuple above, never from input.
        "UPDATE license SET "  # noqa: S608
        + ", ".join(f"{c} = :{c}" for c in columns)
        + " WHERE ref = :ref"
    )
    for columns in (
        tuple(c for i, c in enumerate(_LICENSE_FACTS) if mask >> i & 1)
        for mask in range(1, 2 ** len(_LICENSE_FACTS))
    )
}


@dataclass(frozen=True)
class LicenseView:
    ref: str
    product_id: int | None
    key: str | None
    customer_id: int | None
    block_decided_at: int | None
    block_reason: str | None
    ended_by: str | None = None  # an ending block in force (bridge.core.blocks)
    customer_decided_at: int | None = None  # the newest customer change applied


@dataclass(frozen=True)
class OpenAttempt:
    """An attempt whose effect is not known: in flight when its worker died, or unknown."""

    id: int
    sent_at: datetime
    detail: dict[str, Any]
    intent_id: str = ""
    method: str = ""


@dataclass(frozen=True)
class Claimed:
    id: str
    effect: Effect
    license_ref: str  # as the provider named it (maybe an alias)
    ref: str  # the license it resolves to
    params: dict[str, Any]
    occurred_at: int
    attempts: int
    owner: str  # this run's lease owner
    license: LicenseView | None
    open_attempts: dict[str, OpenAttempt]  # method -> the newest unresolved attempt
    # Key creations: how many later deliveries' hints ``params`` merges (start_hint rows);
    # begin_create checks that none arrived since, before a template is chosen for good.
    created_at: datetime = field(default_factory=utcnow)  # when the intent was stored
    hints: int = 0
    # REGISTER_EVENT: the license's other due events, taken by this run in its claim's
    # transaction (their intent leases are this run's); sent in one RegisterEvents call
    # with this intent's, and ended with it (``finish``, ``reschedule``).
    companions: tuple[Claimed, ...] = ()


@dataclass(frozen=True)
class NotClaimed:
    """Nothing to run now; ``retry_in`` seconds, or None when the intent needs no run."""

    reason: str
    retry_in: float | None


@dataclass
class Outcome:
    """What a run learned, written with its final status in one transaction."""

    attempts: dict[int, str] = field(default_factory=dict)  # attempt id -> outcome
    license: dict[str, Any] = field(default_factory=dict)  # License column -> value
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # companion -> result


def _resolve_orm(s: Session, ref: str) -> str:
    alias = s.execute(
        select(col(LicenseAlias.ref)).where(col(LicenseAlias.alias) == ref)
    ).scalar_one_or_none()
    return alias if alias is not None else ref


def _resolve(t: Tx, ref: str) -> str:
    row = t.one(_RESOLVE, {"alias": ref})
    return row[0] if row is not None else ref


def license_lock(ref: str) -> str:
    return f"license:{ref}"


def claim(
    engine: Engine, intent_id: str, owner: str, lease: float, *, at: datetime | None = None
) -> Claimed | NotClaimed:
    """Claim the intent for one run. ``at`` is the runtime's time (``Runtime.now()``), on
    which its backoff is measured, as :func:`reschedule` set it; leases use the real time."""
    now = utcnow()
    due = at or now
    with tx(engine) as t:
        intent = t.one(_GET_INTENT, {"id": intent_id})
        if intent is None:
            return NotClaimed("no such intent", None)
        effect, license_ref, params, occurred_at, status_, attempts, until, next_at, created = (
            intent
        )
        status = Status(status_)
        lease_until, next_attempt_at = t.read_time(until), t.read_time(next_at)
        if status in TERMINAL or status is Status.WAITING:
            return NotClaimed(f"intent is {status.value}", None)
        if status is Status.RUNNING and lease_until and lease_until > now:
            left = (lease_until - now).total_seconds()
            return NotClaimed(RUNNING_ELSEWHERE, max(left, 0.05))
        if next_attempt_at and next_attempt_at > due:
            return NotClaimed("backing off", (next_attempt_at - due).total_seconds())
        ref = _resolve(t, license_ref)
        exclusive = Effect(effect) not in SHARED_EFFECTS
        keyless = Effect(effect) in KEYLESS_EFFECTS
        if exclusive and not leases.take(t, license_lock(ref), owner, lease):
            return NotClaimed("license busy", BUSY_RETRY)
        row = None if keyless else t.one(_GET_LICENSE, {"ref": ref})
        if row is None and not exclusive and not keyless:
            # Park on a locked row: the key's creation updates this row before it wakes
            # the waiting, so it cannot wake them between our read and our commit (an
            # intent without the license lease would otherwise park after its wake).
            t.run(_LICENSE_STUB, {"ref": ref, "created_at": t.time(now)})
            row = t.one(_GET_LICENSE, {"ref": ref})
        if not keyless and effect != Effect.CREATE_KEY.value and (row is None or not row[1]):
            # Parked until the key exists: the key's creation (or the relay) wakes it.
            t.run(_PARK, {"id": intent_id, "now": t.time(now)})
            leases.drop(t, license_lock(ref), owner)
            return NotClaimed("waiting for the license key", None)
        t.run(
            _RUN,
            {
                "id": intent_id,
                "owner": owner,
                "until": t.time(now + timedelta(seconds=lease)),
                "now": t.time(now),
            },
        )
        merged, hints = json.loads(params), 0
        if effect == Effect.CREATE_KEY.value:
            merged, hints = _merged_start(t, intent_id, merged)
        open_attempts = _open_attempts(t, intent_id)
        license_ = None if row is None else LicenseView(ref, *row)
        companions: tuple[Claimed, ...] = ()
        if _gathers(t, Effect(effect), intent_id, open_attempts, merged):
            companions = _gather(
                t, Effect(effect), intent_id, ref, owner, lease, now, due, license_
            )
        return Claimed(
            id=intent_id,
            effect=Effect(effect),
            license_ref=license_ref,
            ref=ref,
            params=merged,
            occurred_at=occurred_at,
            attempts=attempts,
            owner=owner,
            license=license_,
            open_attempts=open_attempts,
            created_at=t.read_time(created) or now,
            hints=hints,
            companions=companions,
        )


def _gathers(
    t: Tx, effect: Effect, intent_id: str, open_attempts: dict[str, Any], params: dict[str, Any]
) -> bool:
    """Whether this run takes companions: an intent with an unresolved call settles it
    alone, one a CRM deal must complete first (``jobs.effects.deals``) runs alone, and an
    event or myTracker item of a refused batch is sent alone (to tell the bad one from
    the rest)."""
    if effect not in BATCH_SIZES or open_attempts or "deal_id" in params:
        return False
    return t.one(_REFUSED_BEFORE, {"id": intent_id}) is None


def _gather(
    t: Tx,
    effect: Effect,
    lead: str,
    ref: str,
    owner: str,
    lease: float,
    now: datetime,
    due: datetime,
    license_: LicenseView | None,
) -> tuple[Claimed, ...]:
    """Take the other due intents this run sends with its own (``Claimed.companions``):
    the license's events (``_DUE_EVENTS``), or any license's myTracker items of the same
    effect (``_DUE_TRACKS``). Left out: one whose earlier call's outcome is unknown (its
    own run settles it first, alone), one a CRM deal must complete first, one another run
    holds."""
    limit = BATCH_SIZES[effect] - 1
    if effect is Effect.REGISTER_EVENT:
        query = {"lead": lead, "ref": ref, "due": t.time(due), "limit": limit}
        rows = t.all(_DUE_EVENTS, query)
    else:
        query = {"lead": lead, "effect": effect.value, "due": t.time(due), "limit": limit}
        rows = t.all(_DUE_TRACKS, query)
    until, at = t.time(now + timedelta(seconds=lease)), t.time(now)
    taken: list[Claimed] = []
    for id_, license_ref, params, occurred_at, attempts, created, seen in rows:
        merged = json.loads(params)
        if "deal_id" in merged:
            continue
        taking = {"id": id_, "owner": owner, "until": until, "now": at, "seen": seen}
        if t.run(_TAKE, taking) != 1:
            continue
        taken.append(
            Claimed(
                id=id_,
                effect=effect,
                license_ref=license_ref,
                # An event's license is the lead's; a myTracker item's is never read.
                ref=ref if effect is Effect.REGISTER_EVENT else license_ref,
                params=merged,
                occurred_at=occurred_at,
                attempts=attempts,
                owner=owner,
                license=license_ if effect is Effect.REGISTER_EVENT else None,
                open_attempts={},
                created_at=t.read_time(created) or now,
            )
        )
    return tuple(taken)


def _merged_start(t: Tx, intent_id: str, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A key creation's params with every later delivery's hints merged in, in order."""
    rows = t.all(_START_HINTS, {"intent_id": intent_id})
    for (hint,) in rows:
        params = merge_start(params, json.loads(hint))
    return params, len(rows)


def renew_leases(
    engine: Engine,
    intent_id: str,
    owner: str,
    names: list[str],
    seconds: float,
    companions: tuple[str, ...] = (),
) -> list[str] | None:
    """Extend the run's intent lease (and its companions', ``Claimed.companions``) and
    its named leases. None if an intent is no longer the run's, else the names it no
    longer holds (released meanwhile, or lost)."""
    until = utcnow() + timedelta(seconds=seconds)
    with tx(engine) as t:
        at = t.time(until)
        for id_ in (intent_id, *companions):
            if t.run(_RENEW_INTENT, {"id": id_, "owner": owner, "until": at}) != 1:
                return None
        return [
            name
            for name in names
            if t.run(_RENEW_LOCK, {"name": name, "owner": owner, "until": at}) != 1
        ]


def _open_attempt(
    t: Tx, id_: int, sent_at: Any, detail: str | None, intent_id: str, method: str = ""
) -> OpenAttempt:
    sent = t.read_time(sent_at)
    assert sent is not None
    return OpenAttempt(id_, sent, json.loads(detail or "{}"), intent_id, method)


def _open_attempts(t: Tx, intent_id: str) -> dict[str, OpenAttempt]:
    """Per method, the newest attempt if its effect is not known."""
    newest: dict[str, tuple[Any, ...]] = {}
    for row in t.all(_INTENT_ATTEMPTS, {"intent_id": intent_id}):
        newest[row[1]] = row
    return {
        method: _open_attempt(t, id_, sent_at, detail, intent_id, method)
        for method, (id_, _, sent_at, detail, outcome) in newest.items()
        if outcome in (None, "unknown")
    }


def _owned(t: Tx, intent_id: str, owner: str) -> int | None:
    """The intent's attempt count if this run still owns it (else another worker, or a
    person, has taken it over, and the run must leave it alone)."""
    row = t.one(_OWNED, {"id": intent_id, "owner": owner})
    return None if row is None else int(row[0])


def _settle_attempt(t: Tx, attempt_id: int, outcome: str) -> None:
    t.run(_SETTLE_ATTEMPT, {"id": attempt_id, "outcome": outcome, "finished_at": t.time(utcnow())})


def _settle(t: Tx, claimed: Claimed, outcome: Outcome) -> None:
    for attempt_id, result in outcome.attempts.items():
        _settle_attempt(t, attempt_id, result)
    if outcome.license:
        unknown = set(outcome.license) - set(_LICENSE_FACTS)
        if unknown:  # pragma: no cover - effects only learn these facts
            raise ValueError(f"not a license fact: {sorted(unknown)}")
        columns = tuple(c for c in _LICENSE_FACTS if c in outcome.license)
        t.run(_LICENSE_UPDATES[columns], {"ref": claimed.ref, **outcome.license})


def _end(
    t: Tx,
    claimed: Claimed,
    status: Status,
    attempts: int,
    *,
    error: str | None,
    result: dict[str, Any] | None = None,
    next_at: datetime | None = None,
) -> None:
    t.run(
        _AGAIN if status is Status.PENDING else _END,
        {
            "id": claimed.id,
            "status": status.value,
            "attempts": attempts,
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
        leases.drop(t, license_lock(claimed.ref), claimed.owner)
        attempts = _owned(t, claimed.id, claimed.owner)
        if attempts is None:
            return None
        _settle(t, claimed, outcome)
        _end(t, claimed, status, attempts + 1, error=error, result=result)
        for companion in claimed.companions:
            count = _owned(t, companion.id, companion.owner)
            if count is not None:
                _end(
                    t,
                    companion,
                    status if shared else Status.PENDING,
                    count + 1,
                    error=error,
                    result=outcome.results.get(companion.id),
                )
        return _wake(t, claimed.ref) if wake else []


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
        leases.drop(t, license_lock(claimed.ref), claimed.owner)
        attempts = _owned(t, claimed.id, claimed.owner)
        if attempts is None:
            return
        _settle(t, claimed, outcome)
        next_at = (at or utcnow()) + timedelta(seconds=delay) if delay > 0 else None
        _end(
            t,
            claimed,
            Status.PENDING,
            attempts + (1 if count else 0),
            error=error,
            next_at=next_at,
        )
        for companion in claimed.companions:  # back with it, on the same terms
            done = _owned(t, companion.id, companion.owner)
            if done is not None:
                _end(
                    t,
                    companion,
                    Status.PENDING,
                    done + (1 if count else 0),
                    error=error,
                    next_at=next_at,
                )


def release(engine: Engine, claimed: Claimed) -> None:
    """Let go of the license without touching the intent (it is no longer ours)."""
    with tx(engine) as t:
        leases.drop(t, license_lock(claimed.ref), claimed.owner)


# -- attempts (the ledger of mutating calls) ---------------------------------------------


def _insert_attempt(
    t: Tx, intent_id: str, method: str, detail: dict[str, Any], scope: str | None
) -> int:
    row = t.one(
        _NEW_ATTEMPT,
        {
            "intent_id": intent_id,
            "method": method,
            "scope": scope,
            "detail": json.dumps(detail),
            "sent_at": t.time(utcnow()),
        },
    )
    assert row is not None
    return int(row[0])


def start_attempt(
    engine: Engine,
    intent_id: str,
    method: str,
    detail: dict[str, Any],
    *,
    scope: str | None = None,
    supersedes: int | None = None,
) -> int:
    """Record a call about to be sent; ``supersedes`` is an earlier attempt the caller's
    read-back showed was not applied."""
    with tx(engine) as t:
        if supersedes is not None:
            _settle_attempt(t, supersedes, "not_applied")
        return _insert_attempt(t, intent_id, method, detail, scope)


def release_companions(engine: Engine, owner: str, ids: list[str]) -> None:
    """Companions a run will not send after all (past a batch's size): back to pending,
    as they were, for their own runs."""
    with tx(engine) as t:
        for id_ in ids:
            attempts = _owned(t, id_, owner)
            if attempts is not None:
                t.run(
                    _AGAIN,
                    {
                        "id": id_,
                        "status": Status.PENDING.value,
                        "attempts": attempts,
                        "error": None,
                        "result": None,
                        "next_at": None,
                        "now": t.time(utcnow()),
                    },
                )


def start_attempts(
    engine: Engine, method: str, details: dict[str, dict[str, Any]], *, supersedes: list[int]
) -> dict[str, int]:
    """Record one call about to be sent on behalf of several intents: one attempt row
    per intent (intent id -> its detail), all in one transaction; returns their ids."""
    with tx(engine) as t:
        for attempt_id in supersedes:
            _settle_attempt(t, attempt_id, "not_applied")
        return {
            intent_id: _insert_attempt(t, intent_id, method, detail, None)
            for intent_id, detail in details.items()
        }


def finish_attempts(engine: Engine, attempt_ids: list[int], outcome: str) -> None:
    with tx(engine) as t:
        for attempt_id in attempt_ids:
            _settle_attempt(t, attempt_id, outcome)


def finish_attempt(engine: Engine, attempt_id: int, outcome: str) -> None:
    with tx(engine) as t:
        _settle_attempt(t, attempt_id, outcome)


def open_in_scope(engine: Engine, scope: str) -> list[OpenAttempt]:
    """Every attempt in ``scope`` whose effect is not known yet, of any intent."""
    with tx(engine) as t:
        return [
            _open_attempt(t, id_, sent_at, detail, intent_id, method)
            for id_, intent_id, sent_at, detail, method in t.all(_SCOPE_OPEN, {"scope": scope})
        ]


# -- key creation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateStep:
    """What ``begin_create`` found: a key, attempts to settle first, or a new attempt."""

    key: str | None = None
    unresolved: list[OpenAttempt] = field(default_factory=list)
    attempt_id: int | None = None
    lost: bool = False  # the run no longer owns its intent
    busy: bool = False  # another run holds the product's creation gate (settling)
    # Creations of another template are in flight, or creations whose outcomes must be
    # settled together are still in flight: wait for them to end.
    drain: bool = False
    changed: bool = False  # a later delivery's hint arrived since the claim: run again


def begin_create(
    engine: Engine,
    claimed: Claimed,
    *,
    product_id: int,
    template_id: int,
    scope: str,
    lease: float,
) -> CreateStep:
    """Decide, in one transaction under the product's creation gate ``scope``, what this
    key creation does next: nothing (the license has a key), wait, settle, or send.

    Creations of one template run concurrently: keys made from one template are
    interchangeable until the bridge tags and links them, so when k of their replies are
    lost, the k new keys in the Web API Log can be given to those k intents in any order.
    What must not overlap is anything that would make that count ambiguous:

    - creations of *another* template of the product (their keys are not
      interchangeable with these): they wait until every creation in flight has ended
      (``drain``);
    - new creations while some outcome is unknown: once an attempt is unknown (its
      reply lost, or its run died with it in flight), no new one starts, the ones in
      flight end (``drain``), and then one run settles all unknown ones together while
      it holds the gate (``unresolved``; the gate stays held until it comes back here);
    - otherwise the attempt is recorded and the gate let go at once (``attempt_id``).
    """
    now = utcnow()
    with tx(engine) as t:
        if not leases.take(t, scope, claimed.owner, lease):
            return CreateStep(busy=True)
        step = _create_step(t, claimed, product_id, template_id, scope, now)
        if step.unresolved:
            return step  # settled under the gate, which stays this run's until then
        leases.drop(t, scope, claimed.owner)
        return step


def _creation_license(
    t: Tx, claimed: Claimed, product_id: int, template_id: int, now: datetime
) -> str | None:
    """The license a creation is for, inserted if new, read locked; its key if it has one.

    Insert-or-keep, then read it locked: an intent parking on this license at the same
    moment inserts its stub row concurrently (PostgreSQL), and either way one row is
    there to lock."""
    values = {
        "ref": claimed.ref,
        "product_id": product_id,
        "template_id": template_id,
        "created_by": claimed.id,
        "created_at": t.time(now),
    }
    t.run(_NEW_LICENSE, values)
    row = t.one(_GET_LICENSE, {"ref": claimed.ref})
    assert row is not None
    return cast(str | None, row[1]) or None


def _record_template(t: Tx, claimed: Claimed, product_id: int, template_id: int) -> None:
    """The template (and product) this run's creation is sent with, on its license."""
    t.run(
        _LICENSE_TEMPLATE,
        {
            "ref": claimed.ref,
            "product_id": product_id,
            "template_id": template_id,
            "created_by": claimed.id,
        },
    )


def _create_step(
    t: Tx, claimed: Claimed, product_id: int, template_id: int, scope: str, now: datetime
) -> CreateStep:
    key = _creation_license(t, claimed, product_id, template_id, now)
    if key:
        return CreateStep(key=key)
    _record_template(t, claimed, product_id, template_id)
    in_flight: list[OpenAttempt] = []
    unknown: list[OpenAttempt] = []
    for id_, intent_id, sent_at, detail, outcome, status, until, lease_owner in t.all(
        _SCOPE_UNRESOLVED, {"scope": scope}
    ):
        attempt = _open_attempt(t, id_, sent_at, detail, intent_id)
        lease_until = t.read_time(until)
        # In flight: the run that wrote it is still the one running its intent (a run
        # that ended, or died, left an outcome to settle).
        alive = (
            outcome is None
            and status == Status.RUNNING.value
            and attempt.detail.get("run") == lease_owner
            and lease_until is not None
            and lease_until > now
        )
        (in_flight if alive else unknown).append(attempt)
    if unknown:
        return CreateStep(drain=True) if in_flight else CreateStep(unresolved=unknown)
    if any(a.detail.get("template_id") != template_id for a in in_flight):
        return CreateStep(drain=True)
    if _owned(t, claimed.id, claimed.owner) is None:
        # Settling found our own earlier attempt ambiguous (needs review), or the lease
        # ran out and another worker took the intent: never create a key then.
        return CreateStep(lost=True)
    if len(t.all(_START_HINTS, {"intent_id": claimed.id})) != claimed.hints:
        # Another start event of this purchase was stored since the claim: it may name
        # a more specific template. The template is chosen for good only here, in the
        # transaction that records the creation.
        return CreateStep(changed=True)
    detail = {"template_id": template_id, "run": claimed.owner}
    attempt_id = _insert_attempt(t, claimed.id, "key/CreateKeyFromTemplate", detail, scope)
    return CreateStep(attempt_id=attempt_id)


def begin_tagged_create(
    engine: Engine, claimed: Claimed, *, product_id: int, template_id: int
) -> CreateStep:
    """Decide, in one transaction, whether this CreateKey (tagged) creation is sent: the
    license has a key already, the run lost its intent, a later start event arrived (the
    template is chosen for good only here), or the attempt is recorded. No gate: a tagged
    creation's outcome is read back by its own tag, whatever else runs beside it."""
    now = utcnow()
    with tx(engine) as t:
        key = _creation_license(t, claimed, product_id, template_id, now)
        if key:
            return CreateStep(key=key)
        if _owned(t, claimed.id, claimed.owner) is None:
            return CreateStep(lost=True)
        if len(t.all(_START_HINTS, {"intent_id": claimed.id})) != claimed.hints:
            return CreateStep(changed=True)
        _record_template(t, claimed, product_id, template_id)
        detail = {"template_id": template_id, "product_id": product_id, "run": claimed.owner}
        return CreateStep(attempt_id=_insert_attempt(t, claimed.id, "key/CreateKey", detail, None))


class KeyHeld(NeedsReview):
    """The key is held by another license, or listed in an open review: never given."""


def set_license_key(
    engine: Engine,
    ref: str,
    key: str,
    attempt_id: int | None,
    *,
    release: tuple[str, str] | None = None,
    product: tuple[int, int] | None = None,
) -> None:
    """Claim ``key`` for the license, and close the attempt that made it, atomically;
    ``release`` (name, owner) lets go of the creation lease in the same transaction;
    ``product`` (product id, template id) is what the key was made of, when that is not
    what the license row says (a later hint changed it). KeyHeld, changing nothing, when
    another license holds the key or an open review lists it."""
    with tx(engine) as t:
        if release is not None:
            leases.drop(t, *release)
        row = t.one(_GET_LICENSE, {"ref": ref})
        product_id = product[0] if product is not None else (row[0] if row else None)
        if product_id is not None and _held(t, int(product_id), {key}, but=ref):
            raise KeyHeld(f"the key {key} is another license's, or listed in an open review")
        if product is not None:
            t.run(
                _LICENSE_PRODUCT, {"ref": ref, "product_id": product[0], "template_id": product[1]}
            )
        t.run(_LICENSE_KEY, {"ref": ref, "key": key})
        if attempt_id is not None:
            _settle_attempt(t, attempt_id, "applied")


def _held(t: Tx, product_id: int, keys: set[str], *, but: str | None = None) -> set[str]:
    """Which of ``keys`` a license (other than ``but``) holds, or an open review lists."""
    held = {
        k
        for key in sorted(keys)
        for ref_, k in t.all(_HOLDERS, {"product_id": product_id, "key": key})
        if k and ref_ != but
    }
    for (detail,) in t.all(_LISTED, {"pattern": "%candidates%"}):
        held |= keys & set(json.loads(detail).get("candidates", []))
    return held


def claimed_keys(engine: Engine, product_id: int, keys: set[str]) -> set[str]:
    """Which of ``keys`` a license holds, or an open review lists as a candidate."""
    if not keys:
        return set()
    with tx(engine) as t:
        return _held(t, product_id, keys)


def list_candidates(engine: Engine, attempt_id: int, keys: list[str]) -> None:
    """Record the candidate keys a review of this attempt lists (held back meanwhile)."""
    if not keys:
        return
    with tx(engine) as t:
        row = t.one(_ATTEMPT_DETAIL, {"id": attempt_id})
        detail = json.loads(row[0]) if row and row[0] else {}
        detail["candidates"] = keys
        t.run(_SET_ATTEMPT_DETAIL, {"id": attempt_id, "detail": json.dumps(detail)})


def intent_ref(engine: Engine, intent_id: str) -> str | None:
    """The license ref an intent applies to, aliases resolved."""
    with session(engine) as s:
        intent = s.get(Intent, intent_id)
        return _resolve_orm(s, intent.license_ref) if intent is not None else None


def checkout_session(engine: Engine, ref: str) -> str | None:
    """The checkout session that bought license ``ref`` (aliases resolved), as its key
    creation names it; None if the bridge never saw the purchase."""
    with tx(engine) as t:
        row = t.one(_INTENT_PARAMS, {"id": f"{_resolve(t, ref)}:create_key"})
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


# -- waking ----------------------------------------------------------------------------------


def _wake(t: Tx, ref: str, waiting: Sql = _WAITING) -> list[str]:
    """Waiting intents of a license (under its ref or an alias) that ``waiting`` selects
    become pending again; returns those still waiting when woken (see ``_UNPARK``)."""
    now = t.time(utcnow())
    return [
        id_
        for (id_,) in t.all(waiting, {"ref": ref})
        if t.run(_UNPARK, {"id": id_, "now": now}) == 1
    ]


def wake_shared(engine: Engine, ref: str) -> list[str]:
    """The license's waiting intents that need no license lease (``SHARED_EFFECTS``)
    become pending: the moment its key exists, before the key's run has ended."""
    with tx(engine) as t:
        return _wake(t, ref, _WAITING_SHARED)


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
