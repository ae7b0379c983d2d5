"""``bench --scrape N``: what one ``/metrics`` scrape costs with N intents in the table.

Fills a throwaway database (a temporary SQLite file, or a new database on the PostgreSQL
server ``--postgres`` names, dropped after) with N done intents and a few live ones, then
times the reads a scrape makes: the full recount the scrape used to run
(``GROUP BY status`` over the table and ``min(created_at)`` of the pending ones) beside
``bridge.core.metrics``'s capped, indexed reads. Medians of ``repeats`` scrapes, in ms.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, make_url, text

from bridge.core import metrics
from bridge.store import stats
from bridge.store.db import make_engine, migrate

# What the scrape ran before #16: every row of the table, per scrape.
_RECOUNT = (
    text("SELECT status, count(*) FROM intent GROUP BY status"),
    text("SELECT min(created_at) FROM intent WHERE status = 'pending'"),
)
_BATCH = 10_000
_LIVE = ("pending", "waiting", "failed", "needs_review")


@contextmanager
def _database(postgres: str | None) -> Iterator[str]:
    if postgres is None:
        with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'scrape.db'}"
            migrate(url)
            yield url
        return
    import psycopg

    admin = make_url(postgres)
    name = f"bench_scrape_{secrets.token_hex(4)}"
    conninfo = (
        f"host={admin.host} port={admin.port or 5432} user={admin.username} "
        f"dbname={admin.database}" + (f" password={admin.password}" if admin.password else "")
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill(engine: Engine, n: int) -> None:
    """N intents, one in a thousand live (pending, waiting, failed, needs review)."""
    if engine.dialect.name == "postgresql":  # a million rows in seconds, not minutes
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO intent (id, effect, license_ref, params, occurred_at, status,"
                    " attempts, created_at, updated_at) SELECT 'bench-' || g, 'create_key',"
                    " 'ref-' || g, '{}', 1700000000, CASE WHEN g % 1000 = 0 THEN"
                    " (ARRAY['pending', 'waiting', 'failed', 'needs_review'])[(g / 1000) % 4 + 1]"
                    " ELSE 'done' END, 0, now(), now() FROM generate_series(1, :n) AS g"
                ),
                {"n": n},
            )
            connection.execute(text("ANALYZE intent"))
        return
    insert = text(
        "INSERT INTO intent (id, effect, license_ref, params, occurred_at, status, attempts,"
        " created_at, updated_at) VALUES (:id, 'create_key', :ref, '{}', 1700000000, :status,"
        " 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    for start in range(0, n, _BATCH):
        rows = [
            {
                "id": f"bench-{i}",
                "ref": f"ref-{i}",
                "status": _LIVE[i % len(_LIVE)] if i % 1000 == 0 else "done",
            }
            for i in range(start, min(n, start + _BATCH))
        ]
        with engine.begin() as connection:
            connection.execute(insert, rows)
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))


def _median_ms(read: Callable[[], Any], repeats: int) -> float:
    read()  # warm the cache: a scrape every 15 s finds the pages warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        read()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def run(n: int, postgres: str | None, repeats: int = 7) -> dict[str, Any]:
    with _database(postgres) as url:
        engine = make_engine(url)
        try:
            _fill(engine, n)

            def recount() -> None:
                with engine.connect() as connection:
                    for query in _RECOUNT:
                        connection.execute(query).all()

            return {
                "database": engine.dialect.name,
                "intents": n,
                "recount_ms": _median_ms(recount, repeats),
                "scrape_ms": _median_ms(lambda: stats.intent_stats(engine), repeats),
                "count_cap": stats.COUNT_CAP,
            }
        finally:
            engine.dispose()


def report(result: dict[str, Any]) -> str:
    return (
        f"scrape with {result['intents']:,} intents on {result['database']}: "
        f"full recount (before) {result['recount_ms']} ms, capped indexed reads (now) "
        f"{result['scrape_ms']} ms per scrape (median); the database is read at most once "
        f"per {metrics.REFRESH_EVERY:g} s however many scrape"
    )
