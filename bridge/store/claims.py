"""Claiming an intent for one run: its lease, its license's, and what the run needs.

A claim is one transaction: it reads the intent (locked), refuses it if it is not due,
takes the license lease unless the effect takes none (:data:`LEASE_FREE_EFFECTS`), parks the
intent if its license has no key yet, else marks it running under the run's lease and
reads what the run needs: the license, the attempts still unresolved, a key creation's
start hints, and the companions a batch sends along (:func:`_gather`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from bridge.core.intents import TERMINAL, Effect, Status, merge_start
from bridge.store import attempts, intents, leases, licenses, lookups
from bridge.store.attempts import OpenAttempt
from bridge.store.dbapi import Sql, Tx, tx
from bridge.store.licenses import LicenseView
from bridge.store.lookups import IntentRow
from bridge.store.tables import utcnow

RUNNING_ELSEWHERE = "running elsewhere"
# How long a job waits before trying a license that another run holds.
BUSY_RETRY = 0.02
# Effects that neither read nor write the license's shared state (its expiry, block
# flag, customer): their read-back is their own intent's (GetEvents by the intent's
# Metadata; RecordUsage has none), so they run beside the license's other effects, under
# their intent's lease alone. A purchase's event is registered while its key is tagged.
LEASE_FREE_EFFECTS = frozenset(
    {Effect.REGISTER_EVENT, Effect.RECORD_USAGE, Effect.TRACK_REVENUE, Effect.TRACK_EVENT}
)
# Effects that need no license key (myTracker knows nothing of keys): never parked.
KEYLESS_EFFECTS = frozenset({Effect.TRACK_REVENUE, Effect.TRACK_EVENT})
# At most this many intents go in one call (the lead and its companions, see ``_gather``):
# a backlog drains in calls of a bounded size. myTracker: 20 items a batch.
BATCH_SIZES = {Effect.REGISTER_EVENT: 50, Effect.TRACK_REVENUE: 20, Effect.TRACK_EVENT: 20}

# The start_hint table is written by the inbox (bridge.store.inbox); a claim reads it.
_START_HINTS = Sql("SELECT params FROM start_hint WHERE intent_id = :intent_id ORDER BY id")


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


def hint_count(t: Tx, intent_id: str) -> int:
    """How many later deliveries left a start hint for this key creation."""
    return len(t.all(_START_HINTS, {"intent_id": intent_id}))


def claim(
    engine: Engine, intent_id: str, owner: str, lease: float, *, at: datetime | None = None
) -> Claimed | NotClaimed:
    """Claim the intent for one run. ``at`` is the runtime's time (``Runtime.now()``), on
    which its backoff is measured, as :func:`intents.reschedule` set it, and its leases
    run (``bridge.store.leases``)."""
    now = due = at or utcnow()
    with tx(engine) as t:
        row = lookups.get(t, intent_id)
        if row is None:
            return NotClaimed("no such intent", None)
        not_now = _not_due(row, now, due)
        if not_now is not None:
            return not_now
        ref = licenses.resolve(t, row.license_ref)
        exclusive = row.effect not in LEASE_FREE_EFFECTS
        if exclusive and not leases.take(t, leases.license_lock(ref), owner, lease, now):
            return NotClaimed("license busy", BUSY_RETRY)
        license_ = _license_of(t, row.effect, ref, now)
        if _needs_key(row.effect, license_):
            # Parked until the key exists: the key's creation (or the relay) wakes it.
            intents.park(t, intent_id, now)
            leases.drop(t, leases.license_lock(ref), owner)
            return NotClaimed("waiting for the license key", None)
        intents.run(t, intent_id, owner, now + timedelta(seconds=lease), now)
        return _claimed(t, intent_id, row, ref, owner, lease, now, due, license_)


def _not_due(row: IntentRow, now: datetime, due: datetime) -> NotClaimed | None:
    """Why the intent is not run now: ended or waiting, another run's, or backing off."""
    if row.status in TERMINAL or row.status is Status.WAITING:
        return NotClaimed(f"intent is {row.status.value}", None)
    if row.status is Status.RUNNING and row.lease_until and row.lease_until > now:
        left = (row.lease_until - now).total_seconds()
        return NotClaimed(RUNNING_ELSEWHERE, max(left, 0.05))
    if row.next_attempt_at and row.next_attempt_at > due:
        return NotClaimed("backing off", (row.next_attempt_at - due).total_seconds())
    return None


def _license_of(t: Tx, effect: Effect, ref: str, now: datetime) -> LicenseView | None:
    """The license the run reads (locked); None for an effect that needs no key."""
    if effect in KEYLESS_EFFECTS:
        return None
    license_ = licenses.read(t, ref)
    if license_ is None and effect in LEASE_FREE_EFFECTS:
        # Park on a locked row: the key's creation updates this row before it wakes
        # the waiting, so it cannot wake them between our read and our commit (an
        # intent without the license lease would otherwise park after its wake).
        licenses.stub(t, ref, now)
        license_ = licenses.read(t, ref)
    return license_


def _needs_key(effect: Effect, license_: LicenseView | None) -> bool:
    """Whether the run must wait for its license's key (a creation makes it)."""
    if effect in KEYLESS_EFFECTS or effect is Effect.CREATE_KEY:
        return False
    return license_ is None or not license_.key


def _claimed(
    t: Tx,
    intent_id: str,
    row: IntentRow,
    ref: str,
    owner: str,
    lease: float,
    now: datetime,
    due: datetime,
    license_: LicenseView | None,
) -> Claimed:
    """What the run needs, read in the claim's transaction once the intent is its."""
    params, hints = json.loads(row.params), 0
    if row.effect is Effect.CREATE_KEY:
        params, hints = _merged_start(t, intent_id, params)
    open_attempts = attempts.open_of(t, intent_id)
    companions: tuple[Claimed, ...] = ()
    if _gathers(t, row.effect, intent_id, open_attempts, params):
        companions = _gather(t, row.effect, intent_id, ref, owner, lease, now, due, license_)
    return Claimed(
        id=intent_id,
        effect=row.effect,
        license_ref=row.license_ref,
        ref=ref,
        params=params,
        occurred_at=row.occurred_at,
        attempts=row.attempts,
        owner=owner,
        license=license_,
        open_attempts=open_attempts,
        created_at=row.created_at or now,
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
    return not attempts.refused_before(t, intent_id)


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
    the license's events, or any license's myTracker items of the same effect
    (``lookups.due``). Left out: one whose earlier call's outcome is unknown (its own
    run settles it first, alone), one a CRM deal must complete first, one another run
    holds."""
    until = now + timedelta(seconds=lease)
    taken: list[Claimed] = []
    for row in lookups.due(t, effect, lead, ref, due, BATCH_SIZES[effect] - 1):
        params = json.loads(row.params)
        if "deal_id" in params or not intents.take(t, row, owner, until, now):
            continue
        taken.append(
            Claimed(
                id=row.id,
                effect=effect,
                license_ref=row.license_ref,
                # An event's license is the lead's; a myTracker item's is never read.
                ref=ref if effect is Effect.REGISTER_EVENT else row.license_ref,
                params=params,
                occurred_at=row.occurred_at,
                attempts=row.attempts,
                owner=owner,
                license=license_ if effect is Effect.REGISTER_EVENT else None,
                open_attempts={},
                created_at=row.created_at or now,
            )
        )
    return tuple(taken)


def _merged_start(t: Tx, intent_id: str, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A key creation's params with every later delivery's hints merged in, in order."""
    rows = t.all(_START_HINTS, {"intent_id": intent_id})
    for (hint,) in rows:
        params = merge_start(params, json.loads(hint))
    return params, len(rows)
