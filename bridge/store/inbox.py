"""The idempotent inbox: verified deliveries and the intents they imply, in one transaction.

``UNIQUE(provider, external_id)`` plus insert-on-conflict-do-nothing makes a redelivery a
no-op; intents are inserted the same way under their business-derived ids, so two
different events that mean the same effect store it once. Only the intents a delivery
inserted are returned for enqueueing.

:func:`record_many` stores several deliveries in one transaction (the web process's
group commit, see ``bridge.store.batcher``) with exactly the outcome of storing them one after
the other: a second delivery of an event id is a duplicate, an intent implied by two
deliveries is new for the first only. The statements are plain SQL with multi-row
``VALUES`` on the driver's cursor: building them through the ORM cost ten times the
commit, and SQLAlchemy's transaction around them more than SQLite took to store a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from sqlalchemy import Dialect, Engine

from bridge.core.intents import Effect, IntentSpec, Plan
from bridge.store import intents, licenses, wal
from bridge.store.db import is_sqlite
from bridge.store.dbapi import Tx, insert_rows, tx
from bridge.store.payloads import escaped, fits, stored_payload
from bridge.store.tables import WebhookEvent, utcnow


@dataclass(frozen=True)
class Recorded:
    """``new_intents`` are the intents to enqueue now; ``parked`` were stored waiting for
    a key that an intent of the same delivery creates (its job runs them after)."""

    duplicate: bool
    event_id: int | None
    new_intents: list[str]
    parked: list[str] = field(default_factory=list)
    # Key creations stored earlier that this delivery added a start hint to: run now.
    hinted: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified delivery, ready to store. ``payload`` is the JSON text to keep, with
    secrets already redacted (:func:`stored_payload`, :func:`stored_body`)."""

    provider: str
    external_id: str
    event_type: str
    api_version: str | None
    livemode: bool
    payload: str
    plan: Plan


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
    """Store one delivery (see :func:`record_many`)."""
    delivery = Delivery(
        provider, external_id, event_type, api_version, livemode, stored_payload(payload), plan
    )
    return record_many(engine, [delivery])[0]


# The columns' bounds (``WebhookEvent``): PostgreSQL refuses a longer value.
_EXTERNAL_ID_MAX, _TYPE_MAX, _NOTE_MAX = 255, 100, 500


def storable(delivery: Delivery) -> Delivery:
    """``delivery`` as the database can take it. A verified delivery whose id or type it
    cannot store (a NUL, a lone surrogate, too long) is stored with them escaped, as
    ignored with the reason: refused with a 5xx it would come again for ever (Pipedrive
    disables a webhook that keeps failing), and no event the bridge acts on is named so."""
    d = delivery
    if not (fits(d.external_id, _EXTERNAL_ID_MAX) and fits(d.event_type, _TYPE_MAX)):
        return replace(
            d,
            external_id=escaped(d.external_id, _EXTERNAL_ID_MAX),
            event_type=escaped(d.event_type, _TYPE_MAX),
            plan=Plan(
                ignored="its id or type holds a NUL or a lone surrogate, or is too long:"
                " stored escaped, not acted on"
            ),
        )
    if d.plan.ignored is not None and not fits(d.plan.ignored, _NOTE_MAX):
        return replace(d, plan=replace(d.plan, ignored=escaped(d.plan.ignored, _NOTE_MAX)))
    return d


def record_many(engine: Engine, deliveries: Sequence[Delivery]) -> list[Recorded]:
    """Store ``deliveries`` in one transaction, as if one after the other, in order
    (each as :func:`storable` makes it).

    Rows are inserted sorted by their unique keys (key creations first, see
    :func:`bridge.store.intents.insert_new`), so that concurrent transactions on
    PostgreSQL take the keys' locks in one order and cannot deadlock.
    """
    deliveries = [storable(d) for d in deliveries]
    # The first delivery of each event id is the one that may be new; later ones in the
    # same batch are duplicates, as they would be one after the other.
    first: dict[tuple[str, str], int] = {}
    for i, d in enumerate(deliveries):
        first.setdefault((d.provider, d.external_id), i)
    setup = wal.checkpoints_apart if is_sqlite(engine) else None
    with tx(engine, setup=setup) as t:
        now = t.time(utcnow())  # as the driver stores it
        boolean = _boolean(engine.dialect)
        event_ids = _insert_events(t, boolean, [deliveries[i] for i in first.values()], now)
        owner: dict[str, int] = {}  # intent id -> the delivery that implied it first
        new: list[tuple[IntentSpec, int | None]] = []
        starts: list[tuple[IntentSpec, int, int]] = []  # key creations: spec, event, delivery
        aliases: dict[str, str] = {}
        for i, d in enumerate(deliveries):
            key = (d.provider, d.external_id)
            event_id = event_ids.get(key)
            if event_id is None or first[key] != i:
                continue
            for spec in d.plan.intents:
                if spec.id not in owner:
                    owner[spec.id] = i
                    new.append((spec, event_id))
                if spec.effect is Effect.CREATE_KEY:
                    starts.append((spec, event_id, i))
            for alias, ref in d.plan.aliases:
                aliases.setdefault(alias, ref)
        inserted, parked = intents.insert_new(t, new, now)
        licenses.add_aliases(t, aliases)
        # A key creation already stored (by an earlier delivery or batch) keeps what this
        # delivery says about it: the worker merges it before creating the key.
        hints = [(s, e, i) for s, e, i in starts if not (s.id in inserted and owner[s.id] == i)]
        hinted_by = _insert_start_hints(t, [(s, e) for s, e, _ in hints])
        # A waiting creation may run now: the hint may name its template.
        intents.due_now(t, hinted_by)
    results: list[Recorded] = []
    for i, d in enumerate(deliveries):
        key = (d.provider, d.external_id)
        event_id = event_ids.get(key)
        if event_id is None or first[key] != i:
            results.append(Recorded(duplicate=True, event_id=None, new_intents=[]))
            continue
        ids = [s.id for s in d.plan.intents if owner.get(s.id) == i and s.id in inserted]
        results.append(
            Recorded(
                duplicate=False,
                event_id=event_id,
                new_intents=[i for i in ids if i not in parked],
                parked=[i for i in ids if i in parked],
                hinted=sorted({s.id for s, _, j in hints if j == i and s.id in hinted_by}),
            )
        )
    return results


@cache
def _boolean(dialect: Dialect) -> Any:
    """How the driver takes ``webhook_event.livemode``."""
    column = WebhookEvent.__table__.c.livemode  # type: ignore[attr-defined]
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else (lambda value: value)


def _insert_events(
    t: Tx, boolean: Any, deliveries: list[Delivery], now: Any
) -> dict[tuple[str, str], int]:
    """Insert the events that are not stored yet; returns their ids by (provider, id)."""
    rows = sorted(
        (
            d.provider,
            d.external_id,
            d.event_type,
            d.api_version,
            boolean(d.livemode),
            d.payload,
            now,  # received_at
            "ignored" if d.plan.ignored is not None or not d.plan.intents else "planned",
            (d.plan.ignored or "")[:500] or None,
        )
        for d in deliveries
    )
    returned = insert_rows(
        t,
        "INSERT INTO webhook_event (provider, external_id, type, api_version, livemode,"
        " payload, received_at, outcome, note)",
        rows,
        "ON CONFLICT (provider, external_id) DO NOTHING RETURNING id, provider, external_id",
    )
    return {(provider, external_id): id_ for id_, provider, external_id in returned}


def _insert_start_hints(t: Tx, hints: list[tuple[IntentSpec, int]]) -> set[str]:
    """Store the hints not stored yet; the key creations they were added to."""
    rows = sorted((spec.id, event_id, intents.params_json(spec.params)) for spec, event_id in hints)
    returned = insert_rows(
        t,
        "INSERT INTO start_hint (intent_id, event_id, params)",
        rows,
        "ON CONFLICT (intent_id, event_id) DO NOTHING RETURNING intent_id",
    )
    return {intent_id for (intent_id,) in returned}


def add_intents(engine: Engine, specs: Sequence[IntentSpec]) -> list[str]:
    """Store intents no delivery implied (``reconcile --repair``); the ids to enqueue.

    The same insert-on-conflict-do-nothing under deterministic ids as a delivery's
    intents: a repair planned twice is stored once. No event row: ``event_id`` is NULL.
    """
    with tx(engine) as t:
        inserted, parked = intents.insert_new(t, [(s, None) for s in specs], t.time(utcnow()))
    return sorted(inserted - parked)
