"""What the store shows of itself: calls counted per method, and the state as a whole
(``GET /sandbox/state``) or as the few counts a bench polls."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict
from typing import Any

from bridge.sandbox.codes import (
    BLOCKED,
    CUSTOMER_CHANGED,
    DATA_OBJECT_ADDED,
    DATA_OBJECT_REMOVED,
    DATA_OBJECTS_LISTED,
    EXTENDED,
    INT_DECREMENTED,
    INT_INCREMENTED,
    INT_SET,
    KEY_CREATED,
    NOTES_CHANGED,
    STRING_SET,
    UNBLOCKED,
)
from bridge.sandbox.store_records import KeyRecord
from bridge.sandbox.store_schema import Database


class InspectionStore(Database):
    def count_call(
        self, method: str, *, received: int = 0, applied: int = 0, succeeded: int = 0
    ) -> None:
        """Add to the method's counts of calls received, applied and succeeded."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO calls (method, received, applied, succeeded) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(method) DO UPDATE SET received = received + excluded.received,"
                " applied = applied + excluded.applied,"
                " succeeded = succeeded + excluded.succeeded",
                (method, received, applied, succeeded),
            )

    def snapshot(self) -> dict[str, Any]:
        """Everything, for ``GET /sandbox/state``: raw rows, unix times, no paging."""
        with self.transaction():
            keys = [asdict(KeyRecord(**dict(r))) for r in self._select("keys", "global_id")]
            created_ns = dict(self._db.execute("SELECT global_id, ns FROM key_created_ns"))
            customers = [dict(r) for r in self._select("customers", "id")]
            events = [dict(r) for r in self._select("events", "id")]
            log = [dict(r) for r in self._select("web_api_log", "id")]
            usage = [dict(r) for r in self._select("usage_records", "id")]
            data_objects = [dict(r) for r in self._select("data_objects", "id")]
            calls = {
                r["method"]: {s: r[s] for s in ("received", "applied", "succeeded")}
                for r in self._select("calls", "method")
            }
        for key in keys:
            key["block"] = bool(key["block"])
            key["trial_activation"] = bool(key["trial_activation"])
            key["f"] = [bool(key["features"] >> i & 1) for i in range(8)]
            key["created_ns"] = created_ns.get(key["global_id"])
        states = [entry["state"] for entry in log]
        counts = {
            "keys": len(keys),
            "keys_created": states.count(KEY_CREATED),
            "extensions": states.count(EXTENDED),
            "blocks": states.count(BLOCKED),
            "unblocks": states.count(UNBLOCKED),
            "notes_changes": states.count(NOTES_CHANGED),
            "customer_changes": states.count(CUSTOMER_CHANGED),
            "data_objects": len(data_objects),
            "data_objects_added": states.count(DATA_OBJECT_ADDED),
            "data_objects_removed": states.count(DATA_OBJECT_REMOVED),
            "data_object_lists": states.count(DATA_OBJECTS_LISTED),
            "int_increments": states.count(INT_INCREMENTED),
            "int_decrements": states.count(INT_DECREMENTED),
            "int_sets": states.count(INT_SET),
            "string_sets": states.count(STRING_SET),
            "subscription_items": sum(1 for k in keys if k["subscription_item"]),
            "customers": len(customers),
            "events": len(events),
            "usage_records": len(usage),
            "usage_total": sum(u["amount"] for u in usage),
            "log_entries": len(log),
            "calls_received": sum(c["received"] for c in calls.values()),
            "calls_applied": sum(c["applied"] for c in calls.values()),
        }
        return {
            "counts": counts,
            "calls": calls,
            "keys": keys,
            "customers": customers,
            "events": events,
            "web_api_log": log,
            "usage": {k["key"]: k["usage"] for k in keys},
            "usage_records": usage,
            "data_objects": data_objects,
        }

    def progress(self) -> dict[str, int]:
        """Three counts, for ``GET /sandbox/state?view=progress``: what a bench polls every
        few milliseconds, where the full snapshot would cost the sandbox more CPU than the
        calls it measures."""
        with self.transaction():
            keys, linked = self._db.execute(
                "SELECT COUNT(*), COUNT(customer_id) FROM keys"
            ).fetchone()
            (events,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return {"keys": keys, "linked_keys": linked, "events": events}

    def _select(self, table: str, order: str) -> list[sqlite3.Row]:
        sql = f"SELECT * FROM {table} ORDER BY {order}"  # noqa: S608 - constant names
        return self._db.execute(sql).fetchall()
