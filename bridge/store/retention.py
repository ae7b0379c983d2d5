"""Retention: a delivery's body and its buyer's fields are kept only so long.

A delivery received more than ``BRIDGE_RETENTION_DAYS`` ago whose intents have all
finished (done, or failed / needs_review untouched for the same window) loses its body
(``payload`` becomes ``{}``, ``pruned_at`` is set) and its intents' and start hints'
params lose the buyer's personal fields (``bridge.core.personal.pruned_params``). What
stays is what exactly-once needs: the event's provider, id, type and time (a late
redelivery still meets the unique index and is a duplicate) and the intents' ids,
statuses and results (the record of what was done). Refusals in ``delivery_log`` older
than the window go too (they hold the peer's address).

One call prunes one small batch in one short transaction, so a webhook waiting for the
write lock (SQLite) or the rows (PostgreSQL: ``SKIP LOCKED``) waits milliseconds; the
worker calls it batch after batch (``jobs.retention``), the time coming from its clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine

from bridge.core.personal import pruned_params
from bridge.store.db import is_sqlite
from bridge.store.dbapi import Sql, Tx, tx

#: Deliveries per transaction: about 20 x 3 KB of bodies rewritten, 1-3 ms on SQLite.
#: ``bench --retention`` measured batches of 100 (10 ms each, back to back) doubling the
#: webhooks' p99: a webhook waits for the write lock behind a whole batch.
BATCH = 20
#: The least rest between two batches (seconds).
MIN_REST = 0.005


def rest_after(elapsed: float) -> float:
    """How long a pruning run rests after a batch that took ``elapsed`` seconds: as long
    as it worked, so that it holds the write lock at most about half the time, and
    webhooks take it in between."""
    return max(elapsed, MIN_REST)


PRUNED_BODY = "{}"

# An intent is finished once done, or once failed / needs_review for the whole window
# (a person may still replay it within the window, and needs its params to).
_FINISHED = (
    "(i.status = 'done' OR (i.status IN ('failed', 'needs_review') AND i.updated_at < :cutoff))"
)
_DUE = Sql(
    """SELECT e.id FROM webhook_event e
    WHERE e.pruned_at IS NULL AND e.received_at < :cutoff
    AND NOT EXISTS (SELECT 1 FROM intent i WHERE i.event_id = e.id AND NOT {finished})
    AND NOT EXISTS (SELECT 1 FROM start_hint h JOIN intent i ON i.id = h.intent_id
                    WHERE h.event_id = e.id AND NOT {finished})
    ORDER BY e.received_at LIMIT :limit {skip_locked}""".replace("{finished}", _FINISHED)
)
_PRUNE_EVENT = Sql(
    "UPDATE webhook_event SET payload = :body, pruned_at = :now WHERE id = :id"
    " AND pruned_at IS NULL"
)
_EVENT_INTENTS = Sql(
    "SELECT i.id, i.params FROM intent i WHERE i.event_id = :id AND {finished}".replace(
        "{finished}", _FINISHED
    )
)
_SET_INTENT_PARAMS = Sql("UPDATE intent SET params = :params WHERE id = :id")
_EVENT_HINTS = Sql("SELECT id, params FROM start_hint WHERE event_id = :id")
_SET_HINT_PARAMS = Sql("UPDATE start_hint SET params = :params WHERE id = :id")
_OLD_REFUSALS = Sql(
    "DELETE FROM delivery_log WHERE id IN"
    " (SELECT id FROM delivery_log WHERE received_at < :cutoff ORDER BY id LIMIT :limit)"
)


@dataclass(frozen=True)
class Pruned:
    """What one batch changed."""

    events: int = 0
    intents: int = 0
    hints: int = 0
    refusals: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.events + other.events,
            self.intents + other.intents,
            self.hints + other.hints,
            self.refusals + other.refusals,
        )

    @property
    def empty(self) -> bool:
        return self == Pruned()


def cutoff(now: datetime, days: int) -> datetime:
    """Everything received (or last changed) before this is past the window."""
    return now - timedelta(days=days)


def _secure_delete(cursor: Any) -> None:
    """SQLite zeroes what a pruned body leaves behind (its overflow pages above all), so
    that it is gone from the file, not merely unreferenced."""
    cursor.execute("PRAGMA secure_delete=ON")


def prune_batch(engine: Engine, *, now: datetime, days: int, limit: int = BATCH) -> Pruned:
    """Prune up to ``limit`` deliveries that are due, in one transaction."""
    setup = _secure_delete if is_sqlite(engine) else None
    with tx(engine, setup=setup) as t:
        edge = t.time(cutoff(now, days))
        due = [row[0] for row in t.all(_DUE, {"cutoff": edge, "limit": limit})]
        intents = hints = 0
        for event_id in due:
            t.run(_PRUNE_EVENT, {"body": PRUNED_BODY, "now": t.time(now), "id": event_id})
            for intent_id, params in t.all(_EVENT_INTENTS, {"id": event_id, "cutoff": edge}):
                intents += _prune_params(t, _SET_INTENT_PARAMS, intent_id, params)
            for hint_id, params in t.all(_EVENT_HINTS, {"id": event_id}):
                hints += _prune_params(t, _SET_HINT_PARAMS, hint_id, params)
        refusals = t.run(_OLD_REFUSALS, {"cutoff": edge, "limit": limit})
    return Pruned(len(due), intents, hints, max(refusals, 0))


def _prune_params(t: Tx, statement: Sql, row_id: Any, params: str) -> int:
    before = json.loads(params)
    after = pruned_params(before)
    if after is before:
        return 0
    # Compact with sorted keys, as bridge.store.inbox stores params.
    t.run(
        statement,
        {"params": orjson.dumps(after, option=orjson.OPT_SORT_KEYS).decode(), "id": row_id},
    )
    return 1
