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

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, bindparam, insert, or_, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from bridge import locks
from bridge.db import session, transaction
from bridge.intents import TERMINAL, Effect, Status
from bridge.models import Attempt, Intent, License, LicenseAlias, utcnow

# How long a job waits before trying a license that another run holds.
BUSY_RETRY = 0.02

# The hot paths run prebuilt Core statements: building and ORM-loading per call was most
# of a job's CPU. (Rare paths below keep the ORM.)
_I: Any = Intent.__table__  # type: ignore[attr-defined]
_L: Any = License.__table__  # type: ignore[attr-defined]
_A: Any = Attempt.__table__  # type: ignore[attr-defined]
_LA: Any = LicenseAlias.__table__  # type: ignore[attr-defined]

_GET_INTENT = core_select(_I).where(_I.c.id == bindparam("id")).with_for_update()
_GET_ALIAS = core_select(_LA.c.ref).where(_LA.c.alias == bindparam("alias"))
_GET_LICENSE = core_select(_L).where(_L.c.ref == bindparam("ref")).with_for_update()
_INTENT_ATTEMPTS = (
    core_select(_A.c.id, _A.c.method, _A.c.sent_at, _A.c.detail, _A.c.outcome)
    .where(_A.c.intent_id == bindparam("intent_id"))
    .order_by(_A.c.id)
)
_SCOPE_UNRESOLVED = (
    core_select(_A.c.id, _A.c.intent_id, _A.c.sent_at, _A.c.detail)
    .where(_A.c.scope == bindparam("scope"))
    .where(or_(_A.c.outcome.is_(None), _A.c.outcome == "unknown"))
    .order_by(_A.c.id)
)
_SETTLE_ATTEMPT = (
    update(_A)
    .where(_A.c.id == bindparam("attempt_id"))
    .values(outcome=bindparam("outcome"), finished_at=bindparam("finished_at"))
)
_NEW_ATTEMPT = insert(_A).returning(_A.c.id)
_OWNED = (
    core_select(_I.c.id, _I.c.attempts)
    .where(
        _I.c.id == bindparam("id"),
        _I.c.lease_owner == bindparam("owner"),
        _I.c.status == Status.RUNNING.value,
    )
    .with_for_update()
)


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


def _resolve(s: Session | Connection, ref: str) -> str:
    alias = s.execute(_GET_ALIAS, {"alias": ref}).scalar_one_or_none()
    return alias if alias is not None else ref


def license_lock(ref: str) -> str:
    return f"license:{ref}"


@functools.cache
def _updater(table: str, columns: tuple[str, ...]) -> Any:
    """``UPDATE table SET columns... WHERE primary key = :pk``, built once per shape."""
    t, key = {"intent": (_I, "id"), "license": (_L, "ref")}[table]
    return (
        update(t)
        .where(t.c[key] == bindparam("pk"))
        .values({column: bindparam(f"v_{column}") for column in columns})
    )


def _update(conn: Connection, table: str, pk: str, values: dict[str, Any]) -> None:
    columns = tuple(sorted(values))
    params = {f"v_{column}": values[column] for column in columns}
    conn.execute(_updater(table, columns), {"pk": pk, **params})


def _set_intent(conn: Connection, intent_id: str, **values: Any) -> None:
    _update(conn, "intent", intent_id, values)


def claim(engine: Engine, intent_id: str, owner: str, lease: float) -> Claimed | NotClaimed:
    now = utcnow()
    with transaction(engine) as conn:
        intent = conn.execute(_GET_INTENT, {"id": intent_id}).mappings().first()
        if intent is None:
            return NotClaimed("no such intent", None)
        status = Status(intent["status"])
        lease_until, next_at = intent["lease_until"], intent["next_attempt_at"]
        if status in TERMINAL or status is Status.WAITING:
            return NotClaimed(f"intent is {status.value}", None)
        if status is Status.RUNNING and lease_until and _aware(lease_until) > now:
            left = (_aware(lease_until) - now).total_seconds()
            return NotClaimed("running elsewhere", max(left, 0.05))
        if next_at and _aware(next_at) > now:
            return NotClaimed("backing off", (_aware(next_at) - now).total_seconds())
        ref = _resolve(conn, intent["license_ref"])
        if not locks.take(conn, license_lock(ref), owner, lease):
            return NotClaimed("license busy", BUSY_RETRY)
        license_ = conn.execute(_GET_LICENSE, {"ref": ref}).mappings().first()
        if intent["effect"] != Effect.CREATE_KEY.value and (
            license_ is None or not license_["key"]
        ):
            # Parked until the key exists: the key's creation (or the relay) wakes it.
            _set_intent(conn, intent_id, status=Status.WAITING.value, updated_at=now)
            locks.drop(conn, license_lock(ref), owner)
            return NotClaimed("waiting for the license key", None)
        _set_intent(
            conn,
            intent_id,
            status=Status.RUNNING.value,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease),
            updated_at=now,
        )
        view = None
        if license_ is not None:
            view = LicenseView(
                ref,
                license_["product_id"],
                license_["key"],
                license_["customer_id"],
                license_["block_decided_at"],
                license_["block_reason"],
            )
        return Claimed(
            id=intent_id,
            effect=Effect(intent["effect"]),
            license_ref=intent["license_ref"],
            ref=ref,
            params=json.loads(intent["params"]),
            occurred_at=intent["occurred_at"],
            attempts=intent["attempts"],
            owner=owner,
            license=view,
            open_attempts=_open_attempts(conn, intent_id),
        )


def _open_attempt(row: RowMapping, intent_id: str) -> OpenAttempt:
    return OpenAttempt(
        row["id"], _aware(row["sent_at"]), json.loads(row["detail"] or "{}"), intent_id
    )


def _open_attempts(conn: Connection, intent_id: str) -> dict[str, OpenAttempt]:
    """Per method, the newest attempt if its effect is not known."""
    newest: dict[str, RowMapping] = {}
    for row in conn.execute(_INTENT_ATTEMPTS, {"intent_id": intent_id}).mappings():
        newest[row["method"]] = row
    return {
        method: _open_attempt(row, intent_id)
        for method, row in newest.items()
        if row["outcome"] in (None, "unknown")
    }


def _owned(conn: Connection, intent_id: str, owner: str) -> RowMapping | None:
    """The intent's row if this run still owns it (else another worker, or a person, has
    taken it over, and the run must leave it alone)."""
    return conn.execute(_OWNED, {"id": intent_id, "owner": owner}).mappings().first()


def _settle(conn: Connection, claimed: Claimed, outcome: Outcome) -> None:
    now = utcnow()
    for attempt_id, result in outcome.attempts.items():
        conn.execute(
            _SETTLE_ATTEMPT, {"attempt_id": attempt_id, "outcome": result, "finished_at": now}
        )
    if outcome.license:
        _update(conn, "license", claimed.ref, outcome.license)


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
    with transaction(engine) as conn:
        locks.drop(conn, license_lock(claimed.ref), claimed.owner)
        intent = _owned(conn, claimed.id, claimed.owner)
        if intent is None:
            return None
        _settle(conn, claimed, outcome)
        values: dict[str, Any] = {
            "status": status.value,
            "last_error": error,
            "attempts": intent["attempts"] + 1,
            "lease_owner": None,
            "lease_until": None,
            "next_attempt_at": None,
            "updated_at": utcnow(),
        }
        if result is not None:
            values["result"] = json.dumps(result, sort_keys=True)
        _set_intent(conn, claimed.id, **values)
        return _wake(conn, claimed.ref) if wake else []


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
    with transaction(engine) as conn:
        locks.drop(conn, license_lock(claimed.ref), claimed.owner)
        intent = _owned(conn, claimed.id, claimed.owner)
        if intent is None:
            return
        _settle(conn, claimed, outcome)
        now = utcnow()
        values: dict[str, Any] = {
            "status": Status.PENDING.value,
            "attempts": intent["attempts"] + (1 if count else 0),
            "lease_owner": None,
            "lease_until": None,
            "next_attempt_at": now + timedelta(seconds=delay) if delay > 0 else None,
            "updated_at": now,
        }
        if error is not None:
            values["last_error"] = error
        _set_intent(conn, claimed.id, **values)


def release(engine: Engine, claimed: Claimed) -> None:
    """Let go of the license without touching the intent (it is no longer ours)."""
    with transaction(engine) as conn:
        locks.drop(conn, license_lock(claimed.ref), claimed.owner)


# -- attempts (the ledger of mutating calls) ---------------------------------------------


def _insert_attempt(
    conn: Connection, intent_id: str, method: str, detail: dict[str, Any], scope: str | None
) -> int:
    attempt_id: int = conn.execute(
        _NEW_ATTEMPT,
        {
            "intent_id": intent_id,
            "method": method,
            "scope": scope,
            "detail": json.dumps(detail),
            "sent_at": utcnow(),
        },
    ).scalar_one()
    return attempt_id


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
    with transaction(engine) as conn:
        if supersedes is not None:
            conn.execute(
                _SETTLE_ATTEMPT,
                {"attempt_id": supersedes, "outcome": "not_applied", "finished_at": utcnow()},
            )
        return _insert_attempt(conn, intent_id, method, detail, scope)


def finish_attempt(engine: Engine, attempt_id: int, outcome: str) -> None:
    with transaction(engine) as conn:
        conn.execute(
            _SETTLE_ATTEMPT,
            {"attempt_id": attempt_id, "outcome": outcome, "finished_at": utcnow()},
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
    new attempt. The lease stays held until :func:`set_license_key` or ``locks.release``."""
    with transaction(engine) as conn:
        if not locks.take(conn, scope, claimed.owner, lease):
            return CreateStep(busy=True)
        license_ = conn.execute(_GET_LICENSE, {"ref": claimed.ref}).mappings().first()
        if license_ is None:
            conn.execute(
                insert(_L).values(
                    ref=claimed.ref,
                    product_id=product_id,
                    template_id=template_id,
                    created_by=claimed.id,
                    created_at=utcnow(),
                )
            )
        elif license_["key"]:
            return CreateStep(key=license_["key"])
        else:
            _update(
                conn, "license", claimed.ref, {"product_id": product_id, "template_id": template_id}
            )
        unresolved = [
            _open_attempt(row, row["intent_id"])
            for row in conn.execute(_SCOPE_UNRESOLVED, {"scope": scope}).mappings()
        ]
        if unresolved:
            return CreateStep(unresolved=unresolved)
        if _owned(conn, claimed.id, claimed.owner) is None:
            # Settling found our own earlier attempt ambiguous (needs review), or the lease
            # ran out and another worker took the intent: never create a key then.
            return CreateStep(lost=True)
        attempt_id = _insert_attempt(
            conn, claimed.id, "key/CreateKeyFromTemplate", {"template_id": template_id}, scope
        )
        return CreateStep(attempt_id=attempt_id)


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
    with transaction(engine) as conn:
        if release is not None:
            locks.drop(conn, *release)
        _update(conn, "license", ref, {"key": key})
        conn.execute(
            _SETTLE_ATTEMPT,
            {"attempt_id": attempt_id, "outcome": "applied", "finished_at": utcnow()},
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


def _wake(s: Session | Connection, ref: str) -> list[str]:
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


def _make_pending(s: Session | Connection, ids: list[str]) -> None:
    if ids:
        s.execute(
            update(Intent)
            .where(col(Intent.id).in_(ids))
            .values(status=Status.PENDING.value, updated_at=utcnow())
        )
