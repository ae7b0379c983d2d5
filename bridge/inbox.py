"""The idempotent inbox: a verified delivery and the intents it implies, in one transaction.

``UNIQUE(provider, external_id)`` plus insert-on-conflict-do-nothing makes a redelivery a
no-op; intents are inserted the same way under their business-derived ids, so two
different events that mean the same effect store it once. Only the intents this call
inserted are returned for enqueueing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from bridge.db import session
from bridge.intents import Plan, Status
from bridge.models import Intent, LicenseAlias, WebhookEvent, utcnow

# Keys whose values are secrets even inside a provider's payload (a Checkout Session's
# client_secret lets anyone complete it from a browser). They are never stored.
SECRET_KEYS = frozenset({"client_secret", "secret", "api_key", "password", "token"})
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Recorded:
    duplicate: bool
    event_id: int | None
    new_intents: list[str]


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in SECRET_KEYS and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _insert(engine: Engine, table: Any) -> Any:
    """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL spell it alike)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def record(
    engine: Engine,
    *,
    provider: str,
    external_id: str,
    event_type: str,
    api_version: str | None,
    livemode: bool,
    payload: dict[str, Any],
    plan: Plan,
) -> Recorded:
    now = utcnow()
    event_row = {
        "provider": provider,
        "external_id": external_id,
        "type": event_type,
        "api_version": api_version,
        "livemode": livemode,
        "payload": json.dumps(redact(payload), separators=(",", ":")),
        "received_at": now,
        "outcome": "ignored" if plan.ignored is not None or not plan.intents else "planned",
        "note": (plan.ignored or "")[:500] or None,
    }
    with session(engine) as s:
        stmt = (
            _insert(engine, WebhookEvent)
            .values(event_row)
            .on_conflict_do_nothing(index_elements=["provider", "external_id"])
            .returning(col(WebhookEvent.id))
        )
        event_id = s.execute(stmt).scalar_one_or_none()
        if event_id is None:
            return Recorded(duplicate=True, event_id=None, new_intents=[])
        new: list[str] = []
        if plan.intents:
            rows = [
                {
                    "id": spec.id,
                    "effect": spec.effect.value,
                    "license_ref": spec.license_ref,
                    "params": json.dumps(spec.params, separators=(",", ":"), sort_keys=True),
                    "occurred_at": spec.occurred_at,
                    "status": Status.PENDING.value,
                    "attempts": 0,
                    "event_id": event_id,
                    "created_at": now,
                    "updated_at": now,
                }
                for spec in plan.intents
            ]
            inserted = s.execute(
                _insert(engine, Intent)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(col(Intent.id))
            )
            new = list(inserted.scalars())
        if plan.aliases:
            s.execute(
                _insert(engine, LicenseAlias)
                .values([{"alias": a, "ref": r} for a, r in plan.aliases])
                .on_conflict_do_nothing(index_elements=["alias"])
            )
        return Recorded(duplicate=False, event_id=event_id, new_intents=new)


def pending_intents(engine: Engine, limit: int = 1000) -> list[str]:
    """Intents a worker should (re)try now: the relay's work list."""
    now = utcnow()
    with session(engine) as s:
        stmt = (
            select(col(Intent.id))
            .where(col(Intent.status) == Status.PENDING.value)
            .order_by(col(Intent.created_at))
            .limit(limit)
        )
        ids = list(s.execute(stmt).scalars())
        stale = (
            select(col(Intent.id))
            .where(col(Intent.status) == Status.RUNNING.value)
            .where(col(Intent.lease_until) < now)
            .limit(limit)
        )
        ids.extend(s.execute(stale).scalars())
        return ids
