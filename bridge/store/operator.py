"""What the operator's commands read (``bridge.ops``): the lists and records of
``events`` / ``intents``, what a replay names, a dry run's facts, and what ``reconcile``
compares with Cryptolens.

Reads only, each in a session of its own; rows are the tables' own, and a row that does
not exist is ``None``. Writes are the tables' owners' (``bridge.store.intents``,
``bridge.store.licenses``, the inbox's ``add_intents``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from bridge.core.intents import Effect
from bridge.store.intents import REPLAYABLE
from bridge.store.tables import Attempt, Intent, License, LicenseAlias, StartHint, WebhookEvent


def intent_list(
    engine: Engine,
    *,
    status: str | None,
    effect: str | None,
    provider: str | None,
    since: datetime | None,
    limit: int,
) -> list[Intent]:
    """Intents, newest first; ``provider`` is the license ref's prefix."""
    with Session(engine) as s:
        query = select(Intent).order_by(col(Intent.created_at).desc()).limit(limit)
        if status is not None:
            query = query.where(col(Intent.status) == status)
        if effect is not None:
            query = query.where(col(Intent.effect) == effect)
        if provider is not None:
            query = query.where(col(Intent.license_ref).startswith(f"{provider}:"))
        if since is not None:
            query = query.where(col(Intent.created_at) >= since)
        return list(s.exec(query).all())


def intent_calls(engine: Engine, intent_id: str) -> tuple[Intent, list[Attempt]] | None:
    """An intent and its recorded Cryptolens calls, oldest first."""
    with Session(engine) as s:
        row = s.get(Intent, intent_id)
        if row is None:
            return None
        attempts = s.exec(
            select(Attempt).where(col(Attempt.intent_id) == intent_id).order_by(col(Attempt.id))
        ).all()
        return row, list(attempts)


def event_list(
    engine: Engine,
    *,
    provider: str | None,
    event_type: str | None,
    outcome: str | None,
    since: datetime | None,
    limit: int,
) -> list[WebhookEvent]:
    """Stored deliveries, newest first."""
    with Session(engine) as s:
        query = select(WebhookEvent).order_by(col(WebhookEvent.id).desc()).limit(limit)
        if provider is not None:
            query = query.where(col(WebhookEvent.provider) == provider)
        if event_type is not None:
            query = query.where(col(WebhookEvent.type) == event_type)
        if outcome is not None:
            query = query.where(col(WebhookEvent.outcome) == outcome)
        if since is not None:
            query = query.where(col(WebhookEvent.received_at) >= since)
        return list(s.exec(query).all())


def _find_event(s: Session, event_id: str) -> WebhookEvent | None:
    """A delivery by its provider's id, or else by its row id."""
    found = s.exec(select(WebhookEvent).where(col(WebhookEvent.external_id) == event_id)).first()
    if found is None and event_id.isdigit():
        found = s.get(WebhookEvent, int(event_id))
    return found


def event_intents(engine: Engine, event_id: str) -> tuple[WebhookEvent, list[Intent]] | None:
    """A delivery (its provider's id, or its row id) and the intents it implied."""
    with Session(engine) as s:
        row = _find_event(s, event_id)
        if row is None:
            return None
        intents = s.exec(
            select(Intent).where(col(Intent.event_id) == row.id).order_by(col(Intent.id))
        ).all()
        return row, list(intents)


def named_intents(engine: Engine, given: str, *, replayable: bool) -> list[str] | None:
    """The intent ids ``given`` names: an intent's id, or an event's (its provider id or
    row id: its intents; with ``replayable``, those failed or in review). None when it
    is neither."""
    with Session(engine) as s:
        if s.get(Intent, given) is not None:
            return [given]
        event = _find_event(s, given)
        if event is None:
            return None
        query = select(Intent.id).where(col(Intent.event_id) == event.id)
        if replayable:
            query = query.where(col(Intent.status).in_(REPLAYABLE))
        return list(s.exec(query.order_by(col(Intent.id))).all())


@dataclass(frozen=True)
class IntentFacts:
    """What a dry run starts from: the intent, its license (aliases resolved) and the
    start hints later deliveries added to it (JSON, oldest first)."""

    intent: Intent
    ref: str
    hints: list[str]
    license: License | None


def intent_facts(engine: Engine, intent_id: str) -> IntentFacts | None:
    with Session(engine) as s:
        intent = s.get(Intent, intent_id)
        if intent is None:
            return None
        alias = s.get(LicenseAlias, intent.license_ref)
        ref = alias.ref if alias is not None else intent.license_ref
        hints: list[str] = []
        if intent.effect == Effect.CREATE_KEY.value:
            hints = list(
                s.exec(
                    select(StartHint.params)
                    .where(col(StartHint.intent_id) == intent_id)
                    .order_by(col(StartHint.id))
                ).all()
            )
        return IntentFacts(intent, ref, hints, s.get(License, ref))


@dataclass(frozen=True)
class Licenses:
    """The store whole, as ``reconcile`` reads it: once, in one session (one query per
    license would cost more than the reads of Cryptolens do; see ``bench --reconcile``)."""

    creates: list[Intent]  # the key creations (stored since the time asked), by ref
    aliases: dict[str, str]  # alias -> ref
    block_calls: list[tuple[str | None, str, str | None]]  # scope, method, outcome; oldest first
    intents: list[Intent]  # every intent
    hints: dict[str, list[str]]  # intent id -> its start hints (JSON), oldest first
    licenses: dict[str, License]  # ref -> row


def licenses_whole(
    engine: Engine, block_calls: tuple[str, ...], since: datetime | None
) -> Licenses:
    """:class:`Licenses`, with the attempts of the methods ``block_calls``."""
    with Session(engine) as s:
        query = select(Intent).where(col(Intent.effect) == Effect.CREATE_KEY.value)
        if since is not None:
            query = query.where(col(Intent.created_at) >= since)
        creates = list(s.exec(query.order_by(col(Intent.license_ref))).all())
        aliases = {a.alias: a.ref for a in s.exec(select(LicenseAlias)).all()}
        calls = s.exec(
            select(Attempt.scope, Attempt.method, Attempt.outcome)
            .where(col(Attempt.method).in_(block_calls))
            .order_by(col(Attempt.id))
        ).all()
        intents = list(s.exec(select(Intent)).all())
        hints: dict[str, list[str]] = {}
        for intent_id, hint in s.exec(
            select(StartHint.intent_id, StartHint.params).order_by(col(StartHint.id))
        ).all():
            hints.setdefault(intent_id, []).append(hint)
        licenses = {row.ref: row for row in s.exec(select(License)).all()}
    return Licenses(creates, aliases, list(calls), intents, hints, licenses)


def keys_held(engine: Engine) -> dict[int, int]:
    """How many keys the store holds per product: Cryptolens holds as many, less those
    deleted there, plus the vendor's own."""
    with Session(engine) as s:
        rows = s.exec(
            select(License.product_id, func.count())
            .where(col(License.key).is_not(None), col(License.product_id).is_not(None))
            .group_by(col(License.product_id))
        ).all()
    return {int(product): int(count) for product, count in rows if product is not None}
