"""The counts behind the intents' gauges (``bridge.core.metrics``), read in one round trip."""

from __future__ import annotations

import functools
from datetime import datetime

from sqlalchemy import DateTime, Engine, Integer, TextualSelect, column, text

from bridge.core.intents import Status

COUNT_CAP = 1_000  # intents counted per status; the gauge reads "at least" at the cap


def stats_sql(dialect: str) -> str:
    """One statement, one round trip: each status counted through the status index up
    to ``:cap`` rows, and the oldest pending intent (sorting the pending rows only).
    Built from the Status enum, no input: the bind parameters carry the values."""
    # SQLite's planner knows only the average rows per status (ANALYZE: half of the
    # table) and chose to scan a million rows for the few pending ones; PostgreSQL keeps
    # the common values' frequencies and needs no hint.
    index = " INDEXED BY ix_intent_status" if dialect == "sqlite" else ""
    counts = ", ".join(
        f"(SELECT count(*) FROM (SELECT 1 FROM intent{index} WHERE status = :{s.name.lower()}"  # noqa: S608
        f" LIMIT :cap) AS {s.name.lower()}_rows) AS {s.name.lower()}"
        for s in Status
    )
    oldest = (
        f"(SELECT created_at FROM intent{index} WHERE status = :pending ORDER BY created_at"  # noqa: S608
        " LIMIT 1) AS oldest_pending"
    )
    return f"SELECT {counts}, {oldest}"


@functools.cache
def _stats(dialect: str) -> TextualSelect:
    return text(stats_sql(dialect)).columns(
        *(column(s.name.lower(), Integer) for s in Status),
        column("oldest_pending", DateTime(timezone=True)),
    )


def intent_stats(engine: Engine) -> tuple[dict[str, int], datetime | None]:
    params: dict[str, object] = {s.name.lower(): s.value for s in Status}
    with engine.connect() as connection:
        row = connection.execute(_stats(engine.dialect.name), {**params, "cap": COUNT_CAP}).one()
    counts = {s.value: int(getattr(row, s.name.lower())) for s in Status}
    oldest: datetime | None = row.oldest_pending
    return counts, oldest
