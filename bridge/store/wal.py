"""SQLite's write-ahead log: checkpoints out of the commits that store deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine


def checkpoints_apart(cursor: Any) -> None:
    """SQLite connections that store deliveries leave WAL checkpoints to :func:`checkpoint`."""
    cursor.execute("PRAGMA wal_autocheckpoint=0")


def checkpoint(engine: Engine) -> None:
    """Copy what the WAL holds into the SQLite database file, as far as readers allow.

    SQLite runs this inside a commit once the WAL passes 1000 pages: a few milliseconds
    of copying and two fsyncs that would stall every request waiting on the event loop
    (the p99 of ingest). The connections that store deliveries leave it out
    (``wal_autocheckpoint=0``), and the batcher runs it in a thread instead, in two
    steps so that the WAL starts over (see ``bridge.store.batcher``). A PASSIVE checkpoint
    never waits for a lock. Driver errors are raised as they are (the batcher logs them).
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
        finally:
            cursor.close()
    finally:
        connection.close()
