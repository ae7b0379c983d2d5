"""What the admin page reads: deliveries, intents, licenses and the review queue.

Reads only, each in a session of its own (plain functions: the page runs them in a
thread). Rows are the tables' own; a row that does not exist is ``None``. Which license
a ref means is :func:`bridge.store.licenses.resolve`'s answer, and a license's intents
are those :data:`bridge.store.licenses.NAMED_BY_REF` selects, as everywhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, text
from sqlmodel import Session, col, select

from bridge.core.intents import Status
from bridge.store import licenses
from bridge.store.dbapi import aware
from bridge.store.tables import (
    Attempt,
    DeliveryCount,
    Intent,
    License,
    LicenseAlias,
    LoggedDelivery,
    WebhookEvent,
)

PAGE = 100


@dataclass(frozen=True)
class DeliveryLine:
    """One line of the deliveries page: a stored event, or a logged refusal/duplicate."""

    at: datetime
    provider: str
    outcome: str  # stored (planned / ignored), duplicate, refused
    cause: str | None
    external_id: str | None
    event_type: str | None
    detail: str | None
    event_id: int | None = None
    intents: int = 0
    client: str | None = None  # refusals and duplicates: the peer's address


@dataclass(frozen=True)
class Deliveries:
    rows: list[DeliveryLine]
    providers: list[str]
    counts: list[DeliveryCount]  # refusals and duplicates ever, by cause
    stored: dict[str, int]  # events stored, by provider


@dataclass(frozen=True)
class IntentLine:
    """An intent with how many attempts it made."""

    intent: Intent
    attempts: int


@dataclass(frozen=True)
class IntentDetail:
    intent: Intent
    params: dict[str, Any]
    result: Any
    attempts: list[Attempt]
    event: WebhookEvent | None
    license_ref: str  # aliases resolved


@dataclass(frozen=True)
class LicenseDetail:
    ref: str
    license: License | None
    aliases: list[str]
    buyer: dict[str, Any]
    intents: list[IntentLine]
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)


def status_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        rows = s.exec(select(Intent.status, func.count()).group_by(col(Intent.status))).all()
    counts = {status.value: 0 for status in Status}
    counts.update({status: n for status, n in rows})
    return counts


def deliveries(engine: Engine, provider: str | None, limit: int = PAGE) -> Deliveries:
    with Session(engine) as s:
        events = select(WebhookEvent).order_by(col(WebhookEvent.id).desc()).limit(limit)
        logged = select(LoggedDelivery).order_by(col(LoggedDelivery.id).desc()).limit(limit)
        if provider:
            events = events.where(col(WebhookEvent.provider) == provider)
            logged = logged.where(col(LoggedDelivery.provider) == provider)
        event_rows = list(s.exec(events).all())
        ids = [e.id for e in event_rows]
        per_event = dict(
            s.exec(
                select(Intent.event_id, func.count())
                .where(col(Intent.event_id).in_(ids))
                .group_by(col(Intent.event_id))
            ).all()
        )
        rows = [
            DeliveryLine(
                at=aware(e.received_at),
                provider=e.provider,
                outcome=f"stored ({e.outcome})",
                cause=None,
                external_id=e.external_id,
                event_type=e.type,
                detail=e.note,
                event_id=e.id,
                intents=per_event.get(e.id, 0),
            )
            for e in event_rows
        ]
        rows += [
            DeliveryLine(
                at=aware(d.received_at),
                provider=d.provider,
                outcome=d.outcome,
                cause=d.cause,
                external_id=d.external_id,
                event_type=None,
                detail=d.detail,
                client=d.client,
            )
            for d in s.exec(logged).all()
        ]
        providers = sorted(
            set(s.exec(select(WebhookEvent.provider).distinct()).all())
            | set(s.exec(select(DeliveryCount.provider).distinct()).all())
        )
        by_cause = select(DeliveryCount).order_by(
            col(DeliveryCount.provider), col(DeliveryCount.count).desc()
        )
        by_provider = select(WebhookEvent.provider, func.count()).group_by(
            col(WebhookEvent.provider)
        )
        if provider:  # the side tables follow the filter, like the list
            by_cause = by_cause.where(col(DeliveryCount.provider) == provider)
            by_provider = by_provider.where(col(WebhookEvent.provider) == provider)
        counts = list(s.exec(by_cause).all())
        stored = dict(s.exec(by_provider).all())
    rows.sort(key=lambda d: d.at, reverse=True)
    return Deliveries(rows[:limit], providers, counts, stored)


def _with_attempts(s: Session, intents: list[Intent]) -> list[IntentLine]:
    ids = [i.id for i in intents]
    counts = dict(
        s.exec(
            select(Attempt.intent_id, func.count())
            .where(col(Attempt.intent_id).in_(ids))
            .group_by(col(Attempt.intent_id))
        ).all()
    )
    return [IntentLine(i, counts.get(i.id, 0)) for i in intents]


def delivery(engine: Engine, event_id: int) -> tuple[WebhookEvent, list[IntentLine]] | None:
    with Session(engine) as s:
        event = s.get(WebhookEvent, event_id)
        if event is None:
            return None
        intents = s.exec(
            select(Intent).where(col(Intent.event_id) == event_id).order_by(col(Intent.id))
        ).all()
        return event, _with_attempts(s, list(intents))


def intents(engine: Engine, status: str | None, limit: int = PAGE) -> list[IntentLine]:
    with Session(engine) as s:
        query = select(Intent).order_by(col(Intent.updated_at).desc()).limit(limit)
        if status:
            query = query.where(col(Intent.status) == status)
        return _with_attempts(s, list(s.exec(query).all()))


def _json(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def intent(engine: Engine, intent_id: str) -> IntentDetail | None:
    with Session(engine) as s:
        row = s.get(Intent, intent_id)
        if row is None:
            return None
        attempts = s.exec(
            select(Attempt).where(col(Attempt.intent_id) == intent_id).order_by(col(Attempt.id))
        ).all()
        event = s.get(WebhookEvent, row.event_id) if row.event_id is not None else None
    params = _json(row.params)
    return IntentDetail(
        intent=row,
        params=params if isinstance(params, dict) else {},
        result=_json(row.result),
        attempts=list(attempts),
        event=event,
        # After the session: the resolver's transaction is one of its own.
        license_ref=licenses.resolve_ref(engine, row.license_ref),
    )


def license_detail(engine: Engine, ref: str) -> LicenseDetail | None:
    ref = licenses.resolve_ref(engine, ref)
    with Session(engine) as s:
        row = s.get(License, ref)
        aliases = list(s.exec(select(LicenseAlias.alias).where(col(LicenseAlias.ref) == ref)).all())
        rows = list(
            s.exec(
                select(Intent)
                .where(text(licenses.NAMED_BY_REF).bindparams(ref=ref))
                .order_by(col(Intent.occurred_at), col(Intent.id))
            ).all()
        )
        if row is None and not rows:
            return None
        buyer: dict[str, Any] = {}
        for i in rows:
            params = _json(i.params)
            if isinstance(params, dict) and isinstance(params.get("customer"), dict):
                buyer = {**params["customer"], **buyer}
        attempts: dict[str, list[Attempt]] = {}
        for attempt in s.exec(
            select(Attempt)
            .where(col(Attempt.intent_id).in_([i.id for i in rows]))
            .order_by(col(Attempt.id))
        ).all():
            attempts.setdefault(attempt.intent_id, []).append(attempt)
        return LicenseDetail(ref, row, aliases, buyer, _with_attempts(s, rows), attempts)


def needs_review(engine: Engine) -> list[Intent]:
    """The needs_review queue, the longest waiting first."""
    with Session(engine) as s:
        return list(
            s.exec(
                select(Intent)
                .where(col(Intent.status) == Status.NEEDS_REVIEW.value)
                .order_by(col(Intent.updated_at))
            ).all()
        )
