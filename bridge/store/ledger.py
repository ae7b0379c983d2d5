"""The ledger: every usage record once, and the aggregates the sinks are sent.

A record is stored under its idempotency key (``UNIQUE``, insert-on-conflict-do-nothing):
a record seen before changes nothing. One that reuses a stored key for other content
(product, key, meter or quantity: what is billed) is a conflict, not a duplicate: taken
for a retry it would be dropped unbilled without a word.

A new record joins the aggregate of its product, key and meter for the window its
*arrival* falls in (``window_seconds`` per product); each aggregate is one intent, whose
id names product, key (by its digest: ids leave the database, the key must not), meter
and window start, so every web process and worker opens the same one.

An aggregate is open until the worker seals it (:func:`seal`), which happens once its
window has ended; the amount reported is what it holds then, and can never change
after. A record that finds its window's aggregate sealed (a late arrival, or clocks
apart) joins the next open one. Adding to an aggregate locks its row, and sealing
updates it, so the two are ordered: a record is counted in exactly one reported amount.

Within a transaction rows are written in one order (records by idempotency key, then
aggregates by id), so concurrent batches on PostgreSQL cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy import Engine

from bridge.core.intents import usage_intent_id
from bridge.store import intents, licenses
from bridge.store.dbapi import Sql, Tx, tx

# What became of a record the ledger was given (``bridge.usage`` adds "refused").
Outcome = Literal["accepted", "duplicate", "conflict"]


class Record(Protocol):
    """A usage record as the ledger stores it (``bridge.usage.records.UsageIn`` is one)."""

    @property
    def idempotency_key(self) -> str: ...
    @property
    def product_id(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def meter(self) -> str: ...  # "" when none was given
    @property
    def quantity(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def source(self) -> str: ...


class Window(Protocol):
    """Where a product's usage goes and how long its aggregates' windows are."""

    @property
    def window_seconds(self) -> int: ...
    @property
    def sink(self) -> str: ...


class Products(Protocol):
    """The products that bill usage (``bridge.usage.config.UsageConfig`` is one)."""

    def product_for(self, product_id: int, /) -> Window | None: ...


_ROWS_PER_STATEMENT = 200
_STORED_RECORDS = (
    'SELECT idempotency_key, product_id, "key", meter, quantity FROM usage_record'
    " WHERE idempotency_key IN ({marks})"
)
_INSERT_RECORDS = (
    'INSERT INTO usage_record (idempotency_key, product_id, "key", meter, quantity,'
    " occurred_at, received_at, source, aggregate_id) VALUES {values}"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key"
)

_AGGREGATE_STATE = Sql("SELECT sealed_at FROM usage_aggregate WHERE id = :id {for_update}")
_NEW_AGGREGATE = Sql(
    """INSERT INTO usage_aggregate (id, product_id, "key", meter, window_start,
    window_seconds, sink, quantity, records) VALUES (:id, :product_id, :key, :meter,
    :window_start, :window_seconds, :sink, 0, 0) ON CONFLICT (id) DO NOTHING RETURNING id"""
)
_ADD = Sql(
    """UPDATE usage_aggregate SET quantity = quantity + :quantity, records = records + :n
    WHERE id = :id"""
)
_MOVE = Sql("UPDATE usage_record SET aggregate_id = :to WHERE idempotency_key = :idempotency_key")
_SEAL = Sql("UPDATE usage_aggregate SET sealed_at = :now WHERE id = :id AND sealed_at IS NULL")
_AGGREGATE = Sql(
    """SELECT id, product_id, "key", meter, window_start, window_seconds, sink, quantity,
    records, sealed_at FROM usage_aggregate WHERE id = :id"""
)


def aggregate_id(product_id: int, key: str, meter: str, window_start: int) -> str:
    """The aggregate's (and its intent's) id: :func:`bridge.core.intents.usage_intent_id`."""
    return usage_intent_id(product_id, key, meter, window_start)


def window_start(at: datetime, seconds: int) -> int:
    unix = int(at.timestamp())
    return unix - unix % seconds


@dataclass(frozen=True)
class Aggregate:
    id: str
    product_id: int
    key: str
    meter: str
    window_start: int
    window_seconds: int
    sink: str
    quantity: int
    records: int
    sealed_at: datetime | None

    def describe(self) -> str:
        """The aggregate for a person deciding about it (a needs_review reason)."""
        start = datetime.fromtimestamp(self.window_start, UTC).isoformat()
        return (
            f"aggregate {self.id}: {self.quantity} unit(s) from {self.records} record(s) of "
            f"product {self.product_id}, meter {self.meter or '-'}, window {start} "
            f"+{self.window_seconds}s"
        )


@dataclass
class Stored:
    """Per record (in the order given): its outcome and aggregate; and the intents of the
    aggregates this call opened, with when each is due (its window's end)."""

    results: list[tuple[Outcome, str | None]] = field(default_factory=list)
    opened: list[tuple[str, datetime]] = field(default_factory=list)


def record_many(
    engine: Engine, records: Sequence[Record], *, now: datetime, config: Products
) -> Stored:
    """Store ``records`` in one transaction, as if one after the other.

    Every record's product must be in ``config`` (:func:`bridge.usage.records.parse`
    checks it). A second record with an idempotency key already stored, or earlier in
    ``records``, is a duplicate and changes nothing; with other content (:func:`bills`)
    it is a conflict, and changes nothing either.
    """
    with tx(engine) as t:
        return store(t, records, now=now, config=config)


def store(t: Tx, records: Sequence[Record], *, now: datetime, config: Products) -> Stored:
    first: dict[str, int] = {}
    for i, r in enumerate(records):
        first.setdefault(r.idempotency_key, i)
    unique = [records[i] for i in first.values()]
    candidate: dict[str, str] = {}  # idempotency key -> aggregate of its arrival window
    for r in unique:
        product = config.product_for(r.product_id)
        assert product is not None, "parse() admits configured products only"
        ws = window_start(now, product.window_seconds)
        candidate[r.idempotency_key] = aggregate_id(r.product_id, r.key, r.meter, ws)
    stored = Stored()
    final: dict[str, str] = {}  # idempotency key -> the aggregate it joined
    inserted = _insert_records(t, unique, candidate, now)
    groups: dict[str, list[Record]] = {}
    for r in unique:
        if r.idempotency_key in inserted:
            groups.setdefault(candidate[r.idempotency_key], []).append(r)
    for agg_id in sorted(groups):
        members = groups[agg_id]
        joined = _open(t, members[0], config, now, stored)
        for r in members:
            final[r.idempotency_key] = joined
            if joined != agg_id:  # its window's aggregate was sealed: the next one
                t.run(_MOVE, {"to": joined, "idempotency_key": r.idempotency_key})
        t.run(
            _ADD,
            {"id": joined, "quantity": sum(r.quantity for r in members), "n": len(members)},
        )
    # What was stored before under the keys not inserted now: the same record, or not.
    before = _stored_bills(
        t, [r.idempotency_key for r in unique if r.idempotency_key not in inserted]
    )
    for i, r in enumerate(records):
        if first[r.idempotency_key] == i and r.idempotency_key in final:
            stored.results.append(("accepted", final[r.idempotency_key]))
            continue
        earlier = before.get(r.idempotency_key) or bills(records[first[r.idempotency_key]])
        stored.results.append(("duplicate" if bills(r) == earlier else "conflict", None))
    return stored


def bills(r: Record) -> tuple[int, str, str, int]:
    """What a record bills: two records under one idempotency key must agree on it (the
    timestamp is not part of it: a window is chosen by arrival, not by it)."""
    return (r.product_id, r.key, r.meter, r.quantity)


def _stored_bills(t: Tx, keys: list[str]) -> dict[str, tuple[int, str, str, int]]:
    mark = "?" if t.dialect == "sqlite" else "%s"
    found: dict[str, tuple[int, str, str, int]] = {}
    for start in range(0, len(keys), _ROWS_PER_STATEMENT):
        chunk = keys[start : start + _ROWS_PER_STATEMENT]
        # Only placeholders are joined into the statement; the keys are bound.
        t.cursor.execute(_STORED_RECORDS.format(marks=",".join([mark] * len(chunk))), chunk)
        for key, product_id, license_key, meter, quantity in t.cursor.fetchall():
            found[key] = (int(product_id), str(license_key), str(meter), int(quantity))
    return found


def _insert_records(
    t: Tx, records: list[Record], candidate: dict[str, str], now: datetime
) -> set[str]:
    rows = sorted(
        (
            r.idempotency_key,
            r.product_id,
            r.key,
            r.meter,
            r.quantity,
            t.time(r.occurred_at.astimezone(UTC)),
            t.time(now),
            r.source,
            candidate[r.idempotency_key],
        )
        for r in records
    )
    mark = "?" if t.dialect == "sqlite" else "%s"
    group = "(" + ",".join([mark] * 9) + ")"
    inserted: set[str] = set()
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        # Only placeholders are joined into the statement; the values are bound.
        statement = _INSERT_RECORDS.format(values=",".join([group] * len(chunk)))
        t.cursor.execute(
            statement,
            [value for row in chunk for value in row],
        )
        inserted.update(key for (key,) in t.cursor.fetchall())
    return inserted


def _open(t: Tx, r: Record, config: Products, now: datetime, stored: Stored) -> str:
    """The open aggregate for ``r``'s product, key and meter at ``now``: its window's, or
    the first later one not sealed; created (with its intent) if need be, and locked."""
    product = config.product_for(r.product_id)
    assert product is not None
    seconds = product.window_seconds
    ws = window_start(now, seconds)
    while True:
        agg_id = aggregate_id(r.product_id, r.key, r.meter, ws)
        row = t.one(_AGGREGATE_STATE, {"id": agg_id})
        if row is not None:
            if row[0] is None:
                return agg_id
            ws += seconds  # sealed: its amount is on its way; later windows stay open
            continue
        values = {
            "id": agg_id,
            "product_id": r.product_id,
            "key": r.key,
            "meter": r.meter,
            "window_start": ws,
            "window_seconds": seconds,
            "sink": product.sink,
        }
        if t.one(_NEW_AGGREGATE, values) is None:
            continue  # another transaction opened it meanwhile: lock it and look again
        due = datetime.fromtimestamp(ws + seconds, UTC)
        ref = licenses.for_usage(t, r.product_id, r.key, now)
        intents.insert_report(t, values, ref, due, now)
        stored.opened.append((agg_id, due))
        return agg_id


def seal(engine: Engine, agg_id: str, now: datetime) -> Aggregate | None:
    """Close the aggregate to new records (if it is not yet) and return it, final."""
    with tx(engine) as t:
        t.run(_SEAL, {"id": agg_id, "now": t.time(now)})
        row = t.one(_AGGREGATE, {"id": agg_id})
        if row is None:
            return None
        id_, product_id, key, meter, start, seconds, sink, quantity, records, sealed = row
        return Aggregate(
            str(id_),
            int(product_id),
            str(key),
            str(meter),
            int(start),
            int(seconds),
            str(sink),
            int(quantity),
            int(records),
            t.read_time(sealed),
        )


def due_in(due: datetime, now: datetime) -> float:
    """Seconds from ``now`` until ``due`` (0 if past): how long to defer its job."""
    return max((due - now) / timedelta(seconds=1), 0.0)
