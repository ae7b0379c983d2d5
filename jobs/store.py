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
from typing import Any

from sqlalchemy import Engine, or_, update
from sqlmodel import Session, col, select

from bridge import locks
from bridge.db import session
from bridge.intents import TERMINAL, Effect, Status
from bridge.models import Attempt, Intent, License, LicenseAlias, utcnow

# How long a job waits before trying a license that another run holds.
BUSY_RETRY = 0.02


@dataclass(frozen=True)
class LicenseView:
    ref: str
    product_id: int | None
    key: str | None
    customer_id: int | None
    block_decided_at: int | None
    block_reason: str | None


@dataclass(frozen=True)
class OpenAttempt:
    """An attempt whose effect is not known: in flight when its worker died, or unknown."""

    id: int
    sent_at: datetime
    detail: dict[str, Any]
    intent_id: str = ""


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


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)


def _resolve(s: Session, ref: str) -> str:
    alias = s.get(LicenseAlias, ref)
    return alias.ref if alias is not None else ref


def license_lock(ref: str) -> str:
    return f"license:{ref}"


def claim(engine: Engine, intent_id: str, owner: str, lease: float) -> Claimed | NotClaimed:
    now = utcnow()
    with session(engine) as s:
        intent = s.get(Intent, intent_id, with_for_update=True)
        if intent is None:
            return NotClaimed("no such intent", None)
        status = Status(intent.status)
        if status in TERMINAL or status is Status.WAITING:
            return NotClaimed(f"intent is {status.value}", None)
        if status is Status.RUNNING and intent.lease_until and _aware(intent.lease_until) > now:
            left = (_aware(intent.lease_until) - now).total_seconds()
            return NotClaimed("running elsewhere", max(left, 0.05))
        if intent.next_attempt_at and _aware(intent.next_attempt_at) > now:
            return NotClaimed("backing off", (_aware(intent.next_attempt_at) - now).total_seconds())
        ref = _resolve(s, intent.license_ref)
        if not locks.take(s, license_lock(ref), owner, lease):
            return NotClaimed("license busy", BUSY_RETRY)
        license_ = s.get(License, ref)
        if intent.effect != Effect.CREATE_KEY.value and (license_ is None or not license_.key):
            # Parked until the key exists: the key's creation (or the relay) wakes it.
            intent.status = Status.WAITING.value
            intent.updated_at = now
            locks.drop(s, license_lock(ref), owner)
            return NotClaimed("waiting for the license key", None)
        intent.status = Status.RUNNING.value
        intent.lease_owner = owner
        intent.lease_until = now + timedelta(seconds=lease)
        intent.updated_at = now
        view = None
        if license_ is not None:
            view = LicenseView(
                ref,
                license_.product_id,
                license_.key,
                license_.customer_id,
                license_.block_decided_at,
                license_.block_reason,
            )
        return Claimed(
            id=intent.id,
            effect=Effect(intent.effect),
            license_ref=intent.license_ref,
            ref=ref,
            params=json.loads(intent.params),
            occurred_at=intent.occurred_at,
            attempts=intent.attempts,
            owner=owner,
            license=view,
            open_attempts=_open_attempts(s, intent.id),
        )


def _open_attempts(s: Session, intent_id: str) -> dict[str, OpenAttempt]:
    """Per method, the newest attempt if its effect is not known."""
    newest: dict[str, Attempt] = {}
    for row in s.exec(
        select(Attempt).where(col(Attempt.intent_id) == intent_id).order_by(col(Attempt.id))
    ):
        newest[row.method] = row
    return {
        method: OpenAttempt(
            row.id or 0, _aware(row.sent_at), json.loads(row.detail or "{}"), intent_id
        )
        for method, row in newest.items()
        if row.outcome in (None, "unknown")
    }


def _owned(s: Session, intent_id: str, owner: str) -> Intent | None:
    intent: Intent | None = s.get(Intent, intent_id, with_for_update=True)
    if intent is None or intent.lease_owner != owner or intent.status != Status.RUNNING.value:
        return None  # the lease was lost to another worker, or a person took it over
    return intent


def _settle(s: Session, claimed: Claimed, outcome: Outcome) -> None:
    now = utcnow()
    for attempt_id, result in outcome.attempts.items():
        s.execute(
            update(Attempt)
            .where(col(Attempt.id) == attempt_id)
            .values(outcome=result, finished_at=now)
        )
    if outcome.license:
        s.execute(update(License).where(col(License.ref) == claimed.ref).values(**outcome.license))


def finish(
    engine: Engine,
    claimed: Claimed,
    status: Status,
    outcome: Outcome,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    wake: bool = False,
) -> list[str] | None:
    """End the run: status, result, settled attempts, license facts, lease released.

    Returns the waiting intents this run woke (``wake``: a key now exists), or None when
    the run had lost its intent and wrote nothing.
    """
    with session(engine) as s:
        locks.drop(s, license_lock(claimed.ref), claimed.owner)
        intent = _owned(s, claimed.id, claimed.owner)
        if intent is None:
            return None
        _settle(s, claimed, outcome)
        intent.status = status.value
        if result is not None:
            intent.result = json.dumps(result, sort_keys=True)
        intent.last_error = error
        intent.attempts += 1
        intent.lease_owner = None
        intent.lease_until = None
        intent.next_attempt_at = None
        intent.updated_at = utcnow()
        return _wake(s, claimed.ref) if wake else []


def reschedule(
    engine: Engine,
    claimed: Claimed,
    outcome: Outcome,
    *,
    delay: float,
    error: str | None,
    count: bool,
) -> None:
    """Back to pending after ``delay`` seconds, the license lease released."""
    with session(engine) as s:
        locks.drop(s, license_lock(claimed.ref), claimed.owner)
        intent = _owned(s, claimed.id, claimed.owner)
        if intent is None:
            return
        _settle(s, claimed, outcome)
        now = utcnow()
        intent.status = Status.PENDING.value
        if count:
            intent.attempts += 1
        if error is not None:
            intent.last_error = error
        intent.lease_owner = None
        intent.lease_until = None
        intent.next_attempt_at = now + timedelta(seconds=delay) if delay > 0 else None
        intent.updated_at = now


def release(engine: Engine, claimed: Claimed) -> None:
    """Let go of the license without touching the intent (it is no longer ours)."""
    with session(engine) as s:
        locks.drop(s, license_lock(claimed.ref), claimed.owner)


# -- attempts (the ledger of mutating calls) ---------------------------------------------


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
    with session(engine) as s:
        if supersedes is not None:
            s.execute(
                update(Attempt)
                .where(col(Attempt.id) == supersedes)
                .values(outcome="not_applied", finished_at=utcnow())
            )
        attempt = Attempt(
            intent_id=intent_id, method=method, detail=json.dumps(detail), scope=scope
        )
        s.add(attempt)
        s.flush()
        assert attempt.id is not None
        return attempt.id


def finish_attempt(engine: Engine, attempt_id: int, outcome: str) -> None:
    with session(engine) as s:
        s.execute(
            update(Attempt)
            .where(col(Attempt.id) == attempt_id)
            .values(outcome=outcome, finished_at=utcnow())
        )


# -- key creation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateStep:
    """What ``begin_create`` found: a key, attempts to settle first, or a new attempt."""

    key: str | None = None
    unresolved: list[OpenAttempt] = field(default_factory=list)
    attempt_id: int | None = None
    lost: bool = False  # the run no longer owns its intent
    busy: bool = False  # another worker holds the product's creation lease


def begin_create(
    engine: Engine,
    claimed: Claimed,
    *,
    product_id: int,
    template_id: int,
    scope: str,
    lease: float,
) -> CreateStep:
    """In one transaction: take (or renew) the product's creation lease ``scope``; make
    sure the license row exists; if it has a key, say so; if any creation in the product
    is unresolved, list them (they are settled before anything is sent); else record the
    new attempt. The lease stays held until :func:`set_license_key` or :func:`drop_lease`."""
    with session(engine) as s:
        if not locks.take(s, scope, claimed.owner, lease):
            return CreateStep(busy=True)
        license_ = s.get(License, claimed.ref, with_for_update=True)
        if license_ is None:
            license_ = License(
                ref=claimed.ref,
                product_id=product_id,
                template_id=template_id,
                created_by=claimed.id,
            )
            s.add(license_)
        elif license_.key:
            return CreateStep(key=license_.key)
        else:
            license_.product_id = product_id
            license_.template_id = template_id
        unresolved = [
            OpenAttempt(r.id or 0, _aware(r.sent_at), json.loads(r.detail or "{}"), r.intent_id)
            for r in s.exec(
                select(Attempt)
                .where(col(Attempt.scope) == scope)
                .where(or_(col(Attempt.outcome).is_(None), col(Attempt.outcome) == "unknown"))
                .order_by(col(Attempt.id))
            )
        ]
        if unresolved:
            return CreateStep(unresolved=unresolved)
        if _owned(s, claimed.id, claimed.owner) is None:
            # Settling found our own earlier attempt ambiguous (needs review), or the lease
            # ran out and another worker took the intent: never create a key then.
            return CreateStep(lost=True)
        attempt = Attempt(
            intent_id=claimed.id,
            method="key/CreateKeyFromTemplate",
            detail=json.dumps({"template_id": template_id}),
            scope=scope,
        )
        s.add(attempt)
        s.flush()
        return CreateStep(attempt_id=attempt.id)


def set_license_key(
    engine: Engine,
    ref: str,
    key: str,
    attempt_id: int,
    *,
    release: tuple[str, str] | None = None,
) -> None:
    """Claim ``key`` for the license, and close the attempt that made it, atomically;
    ``release`` (name, owner) lets go of the creation lease in the same transaction."""
    with session(engine) as s:
        if release is not None:
            locks.drop(s, *release)
        s.execute(update(License).where(col(License.ref) == ref).values(key=key))
        s.execute(
            update(Attempt)
            .where(col(Attempt.id) == attempt_id)
            .values(outcome="applied", finished_at=utcnow())
        )


def claimed_keys(engine: Engine, product_id: int, keys: set[str]) -> set[str]:
    if not keys:
        return set()
    with session(engine) as s:
        rows = s.execute(
            select(col(License.key)).where(
                col(License.product_id) == product_id,
                col(License.key).in_(keys),
            )
        )
        return {k for k in rows.scalars() if k}


def intent_ref(engine: Engine, intent_id: str) -> str | None:
    """The license ref an intent applies to, aliases resolved."""
    with session(engine) as s:
        intent = s.get(Intent, intent_id)
        return _resolve(s, intent.license_ref) if intent is not None else None


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


def _wake(s: Session, ref: str) -> list[str]:
    """Waiting intents of a license (under its ref or an alias) become pending again."""
    aliases = select(col(LicenseAlias.alias)).where(col(LicenseAlias.ref) == ref)
    ids = list(
        s.execute(
            select(col(Intent.id)).where(
                col(Intent.status) == Status.WAITING.value,
                or_(col(Intent.license_ref) == ref, col(Intent.license_ref).in_(aliases)),
            )
        ).scalars()
    )
    _make_pending(s, ids)
    return ids


def wake_ready_waiting(engine: Engine, limit: int = 1000) -> list[str]:
    """Waiting intents whose license now has a key (an alias may have arrived late)."""
    with session(engine) as s:
        waiting = s.execute(
            select(col(Intent.id), col(Intent.license_ref))
            .where(col(Intent.status) == Status.WAITING.value)
            .limit(limit)
        ).all()
        ready: list[str] = []
        for intent_id, ref in waiting:
            license_ = s.get(License, _resolve(s, ref))
            if license_ is not None and license_.key is not None:
                ready.append(intent_id)
        _make_pending(s, ready)
        return ready


def _make_pending(s: Session, ids: list[str]) -> None:
    if ids:
        s.execute(
            update(Intent)
            .where(col(Intent.id).in_(ids))
            .values(status=Status.PENDING.value, updated_at=utcnow())
        )
