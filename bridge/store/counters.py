"""The ``usage_counter`` table: the collector's watermark per key and counter name, and
what each reading bills into the ledger (``bridge.store.ledger``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from bridge.store import ledger
from bridge.store.dbapi import Sql, tx
from bridge.store.ledger import Products, Stored

_NEW_COUNTER = Sql(
    """INSERT INTO usage_counter (product_id, "key", name, object_id, value, read_at, epoch)
    VALUES (:product_id, :key, :name, :object_id, 0, :never, 0)
    ON CONFLICT (product_id, "key", name) DO NOTHING"""
)
_COUNTER = Sql(
    """SELECT object_id, value, read_at, epoch FROM usage_counter
    WHERE product_id = :product_id AND "key" = :key AND name = :name {for_update}"""
)
_SET_COUNTER = Sql(
    """UPDATE usage_counter SET object_id = :object_id, value = :value, read_at = :read_at,
    epoch = :epoch, note = COALESCE(:note, note)
    WHERE product_id = :product_id AND "key" = :key AND name = :name"""
)
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Reading:
    """What one reading of a counter meant: ``billed`` units added to the ledger, or a
    ``decrease`` reported (from, to), or nothing (unchanged, or older than the last)."""

    billed: int = 0
    decrease: tuple[int, int] | None = None
    stale: bool = False
    stored: Stored = field(default_factory=Stored)


def record_reading(
    engine: Engine,
    *,
    product_id: int,
    key: str,
    name: str,
    object_id: int,
    value: int,
    read_at: datetime,
    config: Products,
) -> Reading:
    """Bill the increase of a counter since its last reading, in the transaction that
    moves its watermark.

    The watermark row is locked first, so two collectors (a cron run and one by hand,
    or a run after a restart) measure each increase once: the second finds the
    watermark already moved. A reading sent before the stored one (``read_at``) is
    stale and changes nothing. A counter that went down, or a new object of that name,
    starts a new epoch from the value read: the drop is reported, never billed.
    """
    names = {"product_id": product_id, "key": key, "name": name}
    with tx(engine) as t:
        t.run(_NEW_COUNTER, {**names, "object_id": object_id, "never": t.time(_NEVER)})
        row = t.one(_COUNTER, names)
        assert row is not None
        last_object, last, last_read, epoch = row
        if (t.read_time(last_read) or _NEVER) >= read_at:
            return Reading(stale=True)
        update: dict[str, Any] = {
            **names,
            "object_id": object_id,
            "value": value,
            "read_at": t.time(read_at),
            "epoch": epoch,
            "note": None,
        }
        if object_id != last_object:  # removed and added again: a new counter, from 0
            last, update["epoch"] = 0, epoch + 1
        if value < last:
            update["epoch"] += 1
            update["note"] = f"went down from {last} to {value} at {read_at.isoformat()}"
            t.run(_SET_COUNTER, update)
            return Reading(decrease=(last, value))
        reading = Reading()
        if value > last:
            record = _Collected(
                idempotency_key=(
                    f"collector:{product_id}:{key}:{name}:{object_id}:{update['epoch']}:"
                    f"{last}-{value}"
                ),
                product_id=product_id,
                key=key,
                meter="",
                quantity=value - last,
                occurred_at=read_at,
                source="collector",
            )
            stored = ledger.store(t, [record], now=read_at, config=config)
            billed = value - last if stored.results[0][0] == "accepted" else 0
            reading = Reading(billed=billed, stored=stored)
        t.run(_SET_COUNTER, update)
        return reading


@dataclass(frozen=True, slots=True)
class _Collected:
    """A counter's increase, billed as a record (:func:`record_reading`)."""

    idempotency_key: str
    product_id: int
    key: str
    meter: str
    quantity: int
    occurred_at: datetime
    source: str
