"""The idempotent inbox: verified deliveries and the intents they imply, in one transaction.

``UNIQUE(provider, external_id)`` plus insert-on-conflict-do-nothing makes a redelivery a
no-op; intents are inserted the same way under their business-derived ids, so two
different events that mean the same effect store it once. Only the intents a delivery
inserted are returned for enqueueing.

:func:`record_many` stores several deliveries in one transaction (the web process's
group commit, see ``bridge.core.batcher``) with exactly the outcome of storing them one after
the other: a second delivery of an event id is a duplicate, an intent implied by two
deliveries is new for the first only. The statements are plain SQL with multi-row
``VALUES`` on the driver's cursor: building them through the ORM cost ten times the
commit, and SQLAlchemy's transaction around them more than SQLite took to store a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import Dialect, Engine

from bridge.core.intents import Effect, IntentSpec, Plan, Status
from bridge.store import wal
from bridge.store.db import is_sqlite
from bridge.store.dbapi import tx
from bridge.store.payloads import escaped, fits, stored_payload
from bridge.store.tables import WebhookEvent, utcnow

# Rows per INSERT: far below SQLite's (32766) and PostgreSQL's (65535) parameter limits.
_ROWS_PER_STATEMENT = 500

_PENDING, _WAITING = Status.PENDING.value, Status.WAITING.value


def _params_json(params: dict[str, Any]) -> str:
    """An intent's params as stored: compact JSON, keys sorted (orjson: a tenth of the
    standard library's time, and the same value when read back)."""
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()


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
    :func:`_insert_intents`), so that concurrent transactions on PostgreSQL take the keys'
    locks in one order and cannot deadlock.
    """
    deliveries = [storable(d) for d in deliveries]
    sql = _sql(engine.dialect)
    # The first delivery of each event id is the one that may be new; later ones in the
    # same batch are duplicates, as they would be one after the other.
    first: dict[tuple[str, str], int] = {}
    for i, d in enumerate(deliveries):
        first.setdefault((d.provider, d.external_id), i)
    setup = wal.checkpoints_apart if is_sqlite(engine) else None
    with tx(engine, setup=setup) as t:
        cursor = t.cursor
        now = t.time(utcnow())  # as the driver stores it
        event_ids = _insert_events(cursor, sql, [deliveries[i] for i in first.values()], now)
        owner: dict[str, int] = {}  # intent id -> the delivery that implied it first
        intents: list[tuple[IntentSpec, int | None]] = []
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
                    intents.append((spec, event_id))
                if spec.effect is Effect.CREATE_KEY:
                    starts.append((spec, event_id, i))
            for alias, ref in d.plan.aliases:
                aliases.setdefault(alias, ref)
        inserted, parked = _insert_intents(cursor, sql, intents, now)
        _insert_aliases(cursor, sql, aliases)
        # A key creation already stored (by an earlier delivery or batch) keeps what this
        # delivery says about it: the worker merges it before creating the key.
        hints = [(s, e, i) for s, e, i in starts if not (s.id in inserted and owner[s.id] == i)]
        hinted_by = _insert_start_hints(cursor, sql, [(s, e) for s, e, _ in hints])
        if hinted_by:
            # A waiting creation may run now: the hint may name its template.
            marks = ",".join([sql.mark] * len(hinted_by))  # placeholders; the ids are bound
            cursor.execute(
                "UPDATE intent SET next_attempt_at = NULL"  # noqa: S608
                f" WHERE status = 'pending' AND id IN ({marks})",
                sorted(hinted_by),
            )
    results: list[Recorded] = []
    for i, d in enumerate(deliveries):
        key = (d.provider, d.external_id)
        event_id = event_ids.get(key)
        if event_id is None or first[key] != i:
            results.append(Recorded(duplicate=True, event_id=None, new_intents=[]))
            continue
        new = [s.id for s in d.plan.intents if owner.get(s.id) == i and s.id in inserted]
        results.append(
            Recorded(
                duplicate=False,
                event_id=event_id,
                new_intents=[i for i in new if i not in parked],
                parked=[i for i in new if i in parked],
                hinted=sorted({s.id for s, _, j in hints if j == i and s.id in hinted_by}),
            )
        )
    return results


@dataclass(frozen=True)
class _Sql:
    mark: str  # the driver's positional placeholder
    boolean: Any


@cache
def _sql(dialect: Dialect) -> _Sql:
    def processor(column: Any) -> Any:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        return process if process is not None else (lambda value: value)

    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    return _Sql(
        mark="?" if dialect.paramstyle == "qmark" else "%s",
        boolean=processor(table.c.livemode),
    )


@cache
def _statement(head: str, tail: str, mark: str, width: int, rows: int) -> str:
    group = "(" + ",".join([mark] * width) + ")"
    return f"{head} VALUES {','.join([group] * rows)} {tail}"


def _insert(cursor: Any, sql: _Sql, head: str, rows: list[tuple[Any, ...]], tail: str) -> list[Any]:
    """``head VALUES (...), (...) tail``, a chunk of rows at a time; the RETURNING rows."""
    returned: list[Any] = []
    if not rows:
        return returned
    width = len(rows[0])
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        statement = _statement(head, tail, sql.mark, width, len(chunk))
        cursor.execute(statement, list(chain.from_iterable(chunk)))
        if cursor.description is not None:
            returned.extend(cursor.fetchall())
    return returned


def _insert_events(
    cursor: Any, sql: _Sql, deliveries: list[Delivery], now: Any
) -> dict[tuple[str, str], int]:
    """Insert the events that are not stored yet; returns their ids by (provider, id)."""
    rows = sorted(
        (
            d.provider,
            d.external_id,
            d.event_type,
            d.api_version,
            sql.boolean(d.livemode),
            d.payload,
            now,  # received_at
            "ignored" if d.plan.ignored is not None or not d.plan.intents else "planned",
            (d.plan.ignored or "")[:500] or None,
        )
        for d in deliveries
    )
    returned = _insert(
        cursor,
        sql,
        "INSERT INTO webhook_event (provider, external_id, type, api_version, livemode,"
        " payload, received_at, outcome, note)",
        rows,
        "ON CONFLICT (provider, external_id) DO NOTHING RETURNING id, provider, external_id",
    )
    return {(provider, external_id): id_ for id_, provider, external_id in returned}


def _insert_intents(
    cursor: Any, sql: _Sql, intents: list[tuple[IntentSpec, int | None]], now: Any
) -> tuple[set[str], set[str]]:
    """Insert the intents that are not stored yet; returns the ids inserted, and those of
    them stored waiting.

    An intent on a license whose key a new intent creates is stored waiting: sent to a
    worker now it would only find no key and park itself; the key's job runs it the
    moment the key exists. Only when the creating intent is new in this very
    transaction: then it cannot have finished, and its end is what wakes them. So key
    creations are inserted first, the rest after with the status that follows. (A given
    id is always one or the other, so every transaction still takes the locks in one
    order: key creations by id, then the rest by id.)
    """
    creations = [(s, e) for s, e in intents if s.effect is Effect.CREATE_KEY]
    rest = [(s, e) for s, e in intents if s.effect is not Effect.CREATE_KEY]
    inserted = _insert_intent_rows(cursor, sql, creations, now, frozenset())
    creating = frozenset(s.license_ref for s, _ in creations if s.id in inserted)
    inserted_rest = _insert_intent_rows(cursor, sql, rest, now, creating)
    waiting = {s.id for s, _ in rest if s.license_ref in creating and s.id in inserted_rest}
    return inserted | inserted_rest, waiting


def _insert_intent_rows(
    cursor: Any,
    sql: _Sql,
    intents: list[tuple[IntentSpec, int | None]],
    now: Any,
    waiting_on: frozenset[str],
) -> set[str]:
    rows = sorted(
        (
            spec.id,
            spec.effect.value,
            spec.license_ref,
            _params_json(spec.params),
            spec.occurred_at,
            _WAITING if spec.license_ref in waiting_on else _PENDING,
            0,
            event_id,
            now,  # created_at
            now,  # updated_at
        )
        for spec, event_id in intents
    )
    returned = _insert(
        cursor,
        sql,
        "INSERT INTO intent (id, effect, license_ref, params, occurred_at, status, attempts,"
        " event_id, created_at, updated_at)",
        rows,
        "ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    return {id_ for (id_,) in returned}


def _insert_start_hints(cursor: Any, sql: _Sql, hints: list[tuple[IntentSpec, int]]) -> set[str]:
    """Store the hints not stored yet; the key creations they were added to."""
    rows = sorted((spec.id, event_id, _params_json(spec.params)) for spec, event_id in hints)
    returned = _insert(
        cursor,
        sql,
        "INSERT INTO start_hint (intent_id, event_id, params)",
        rows,
        "ON CONFLICT (intent_id, event_id) DO NOTHING RETURNING intent_id",
    )
    return {intent_id for (intent_id,) in returned}


def _insert_aliases(cursor: Any, sql: _Sql, aliases: dict[str, str]) -> None:
    rows = sorted(aliases.items())
    _insert(
        cursor,
        sql,
        "INSERT INTO license_alias (alias, ref)",
        rows,
        "ON CONFLICT (alias) DO NOTHING",
    )


def add_intents(engine: Engine, specs: Sequence[IntentSpec]) -> list[str]:
    """Store intents no delivery implied (``reconcile --repair``); the ids to enqueue.

    The same insert-on-conflict-do-nothing under deterministic ids as a delivery's
    intents: a repair planned twice is stored once. No event row: ``event_id`` is NULL.
    """
    sql = _sql(engine.dialect)
    with tx(engine) as t:
        now = t.time(utcnow())
        inserted, parked = _insert_intents(t.cursor, sql, [(s, None) for s in specs], now)
    return sorted(inserted - parked)
