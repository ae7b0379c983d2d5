"""The worker's database operations, each one short transaction (run them in a thread).

Intent status moves only through these functions, so the rules live in one place:
a claim is a lease, a result is written in the same transaction as the state it proves,
and an attempt row is committed before its Cryptolens call is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, update
from sqlmodel import col, select

from bridge.db import session
from bridge.intents import TERMINAL, Effect, Status
from bridge.models import Attempt, Intent, License, LicenseAlias, utcnow


@dataclass(frozen=True)
class Claimed:
    id: str
    effect: Effect
    license_ref: str
    params: dict[str, Any]
    occurred_at: int
    attempts: int
    progress: dict[str, Any]  # what earlier runs already did (from ``result``)


@dataclass(frozen=True)
class NotClaimed:
    """Nothing to run now; ``retry_in`` seconds, or None when the intent needs no run."""

    reason: str
    retry_in: float | None


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
        intent.status = Status.RUNNING.value
        intent.lease_owner = owner
        intent.lease_until = now + timedelta(seconds=lease)
        intent.updated_at = now
        return Claimed(
            id=intent.id,
            effect=Effect(intent.effect),
            license_ref=intent.license_ref,
            params=json.loads(intent.params),
            occurred_at=intent.occurred_at,
            attempts=intent.attempts,
            progress=json.loads(intent.result) if intent.result else {},
        )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)


def _owned(s: Any, intent_id: str, owner: str) -> Intent | None:
    intent: Intent | None = s.get(Intent, intent_id, with_for_update=True)
    if intent is None or intent.lease_owner != owner or intent.status != Status.RUNNING.value:
        return None  # the lease was lost to another worker: leave the row to it
    return intent


def still_owned(engine: Engine, intent_id: str, owner: str) -> bool:
    with session(engine) as s:
        return _owned(s, intent_id, owner) is not None


def finish(
    engine: Engine,
    intent_id: str,
    owner: str,
    status: Status,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    count_attempt: bool = False,
) -> bool:
    with session(engine) as s:
        intent = _owned(s, intent_id, owner)
        if intent is None:
            return False
        intent.status = status.value
        if result is not None:
            intent.result = json.dumps(result, sort_keys=True)
        if error is not None or status is Status.DONE:
            intent.last_error = error
        if count_attempt:
            intent.attempts += 1
        intent.lease_owner = None
        intent.lease_until = None
        intent.next_attempt_at = None
        intent.updated_at = utcnow()
        return True


def reschedule(
    engine: Engine, intent_id: str, owner: str, *, delay: float, error: str | None, count: bool
) -> int:
    """Back to pending after ``delay`` seconds; returns the attempts made so far."""
    with session(engine) as s:
        intent = _owned(s, intent_id, owner)
        if intent is None:
            return 0
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
        return intent.attempts


def save_progress(engine: Engine, intent_id: str, progress: dict[str, Any]) -> None:
    with session(engine) as s:
        s.execute(
            update(Intent)
            .where(col(Intent.id) == intent_id)
            .values(result=json.dumps(progress, sort_keys=True), updated_at=utcnow())
        )


# -- attempts (the ledger of mutating calls) ---------------------------------------------


def start_attempt(
    engine: Engine,
    intent_id: str,
    method: str,
    detail: dict[str, Any],
    scope: str | None = None,
) -> int:
    with session(engine) as s:
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


@dataclass(frozen=True)
class OpenAttempt:
    id: int
    sent_at: datetime
    detail: dict[str, Any]
    intent_id: str = ""


def open_attempt(engine: Engine, intent_id: str, method: str) -> OpenAttempt | None:
    """The newest attempt of ``method`` whose effect is not known: in flight or unknown."""
    with session(engine) as s:
        row = s.execute(
            select(Attempt)
            .where(col(Attempt.intent_id) == intent_id, col(Attempt.method) == method)
            .order_by(col(Attempt.id).desc())
            .limit(1)
        ).scalar_one_or_none()
        if row is None or row.outcome not in (None, "unknown"):
            return None
        assert row.id is not None
        return OpenAttempt(row.id, _aware(row.sent_at), json.loads(row.detail or "{}"), intent_id)


def unresolved_in_scope(engine: Engine, scope: str) -> list[OpenAttempt]:
    """Attempts in ``scope`` whose effect is not known yet, oldest first."""
    with session(engine) as s:
        rows = s.execute(
            select(Attempt)
            .where(col(Attempt.scope) == scope)
            .where(or_(col(Attempt.outcome).is_(None), col(Attempt.outcome) == "unknown"))
            .order_by(col(Attempt.id))
        ).scalars()
        return [
            OpenAttempt(r.id or 0, _aware(r.sent_at), json.loads(r.detail or "{}"), r.intent_id)
            for r in rows
        ]


def intent_ref(engine: Engine, intent_id: str) -> str | None:
    """The license ref an intent applies to, aliases resolved."""
    with session(engine) as s:
        intent = s.get(Intent, intent_id)
        if intent is None:
            return None
        alias = s.get(LicenseAlias, intent.license_ref)
        return alias.ref if alias is not None else intent.license_ref


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


# -- licenses ----------------------------------------------------------------------------


def resolve_ref(engine: Engine, ref: str) -> str:
    with session(engine) as s:
        alias = s.get(LicenseAlias, ref)
        return alias.ref if alias is not None else ref


def get_license(engine: Engine, ref: str) -> License | None:
    with session(engine) as s:
        return s.get(License, ref)


def ensure_license(
    engine: Engine, ref: str, *, product_id: int, template_id: int, created_by: str
) -> License:
    with session(engine) as s:
        license_ = s.get(License, ref, with_for_update=True)
        if license_ is None:
            license_ = License(
                ref=ref, product_id=product_id, template_id=template_id, created_by=created_by
            )
            s.add(license_)
        elif license_.key is None:
            license_.product_id = product_id
            license_.template_id = template_id
        return license_


def set_license_key(engine: Engine, ref: str, key: str, attempt_id: int | None) -> None:
    """Claim ``key`` for the license, and close the attempt that made it, atomically."""
    with session(engine) as s:
        s.execute(update(License).where(col(License.ref) == ref).values(key=key))
        if attempt_id is not None:
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


def set_customer(engine: Engine, ref: str, customer_id: int) -> None:
    with session(engine) as s:
        s.execute(update(License).where(col(License.ref) == ref).values(customer_id=customer_id))


def record_block_decision(engine: Engine, ref: str, occurred_at: int, reason: str | None) -> None:
    with session(engine) as s:
        s.execute(
            update(License)
            .where(col(License.ref) == ref)
            .values(block_decided_at=occurred_at, block_reason=reason)
        )


def wake_waiting(engine: Engine, ref: str) -> list[str]:
    """Waiting intents of a license (under its ref or an alias) become pending again."""
    with session(engine) as s:
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
            alias = s.get(LicenseAlias, ref)
            license_ = s.get(License, alias.ref if alias else ref)
            if license_ is not None and license_.key is not None:
                ready.append(intent_id)
        _make_pending(s, ready)
        return ready


def _make_pending(s: Any, ids: list[str]) -> None:
    if ids:
        s.execute(
            update(Intent)
            .where(col(Intent.id).in_(ids))
            .values(status=Status.PENDING.value, updated_at=utcnow())
        )
