"""Leaving no copy of erased rows in the database's files (``bridge.store.erasure``'s
last step): SQLite's WAL truncated and its file read back; PostgreSQL's tables rewritten
while no transaction still needs their old row versions."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.core.errors import BridgeError
from bridge.core.personal import Address
from bridge.store.db import Engine, is_sqlite


class ErasureIncomplete(BridgeError):
    """The rows were erased but a copy may remain in the files (SQLite's WAL could not
    be truncated while readers held it): run ``forget`` again when the bridge is quiet."""


@dataclass
class Settled:
    """What settling SQLite's files did: whether the whole file was rewritten, the files
    read back, and whether they are free of the address."""

    vacuumed: bool = False
    files_checked: list[str] = field(default_factory=list)
    files_clean: bool | None = None


def settle_sqlite(engine: Engine, address: Address) -> Settled:
    """No copy of the erased rows left in SQLite's files: the WAL copied in and truncated,
    the file rewritten (VACUUM) if freed pages still hold the address, then read back."""
    settled = Settled()
    database = engine.url.database
    if not database or database == ":memory:":
        return settled
    path = Path(database)
    _checkpoint(engine)
    if _in_files(path, address):
        # Space freed before by a connection without secure_delete: rewrite the file.
        _raw(engine, "VACUUM")
        settled.vacuumed = True
        _checkpoint(engine)
    settled.files_checked = [str(p) for p in _files(path)]
    settled.files_clean = not _in_files(path, address)
    return settled


def _checkpoint(
    engine: Engine, *, tries: int = 20, pause: Callable[[float], None] = time.sleep
) -> None:
    """Copy the WAL into the database and truncate it to zero bytes: its frames hold the
    rows as they were. Readers in other processes can keep it busy for a moment."""
    for attempt in range(tries):
        busy = _raw(engine, "PRAGMA wal_checkpoint(TRUNCATE)")
        if busy and not busy[0][0]:
            return
        pause(min(0.05 * 2**attempt, 1.0))
    raise ErasureIncomplete(
        "the rows are erased, but SQLite's WAL could not be truncated (other connections"
        " kept reading): run forget again when the bridge is quiet"
    )


def _files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal")) if p.exists()]


def _in_files(path: Path, address: Address) -> bool:
    """Whether the database file or its WAL holds the address, as text or as JSON
    escapes it, in any ASCII case (read in overlapping blocks)."""
    forms = {f.encode() for f in address.forms}
    forms |= {json.dumps(address.folded).strip('"').lower().encode()}
    forms |= {address.folded.encode("utf-8")}
    width = max(len(f) for f in forms)
    for file in _files(path):
        with file.open("rb") as handle:
            tail = b""
            while block := handle.read(1 << 20):
                text = (tail + block).lower()
                if any(f in text for f in forms):
                    return True
                tail = text[-width:]
    return False


# VACUUM VERBOSE's word for old row versions some transaction may still see.
_KEPT = re.compile(r"(\d+) dead row versions cannot be removed yet")


def vacuum(
    engine: Engine,
    tables: list[str],
    *,
    full: bool,
    tries: int = 20,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """VACUUM runs outside a transaction: on a connection of its own in autocommit. Only
    FULL leaves no old bytes: it writes the table anew and removes the old files (a plain
    VACUUM marks the space free and leaves the old tuples' bytes in it, as tests saw).

    Neither drops an old row version a running transaction may still see (one that
    began before the erasure, in any database of the server): it is copied along,
    address and all. VACUUM VERBOSE says how many it kept; the table is vacuumed again
    until none is, and if transactions hold them that long, :class:`ErasureIncomplete`
    says so."""
    for table in tables:
        for attempt in range(tries):
            notes = _raw_notices(engine, f'VACUUM ({"FULL, " if full else ""}VERBOSE) "{table}"')
            if not any(int(m.group(1)) for n in notes for m in _KEPT.finditer(n)):
                break
            pause(min(0.05 * 2**attempt, 1.0))
        else:
            raise ErasureIncomplete(
                f"the rows are erased, but old versions of {table}'s rows are still kept for"
                " transactions that began before: run forget again once they have ended"
            )


def _raw_notices(engine: Engine, statement: str) -> list[str]:
    """``statement`` in autocommit (PostgreSQL), and the notices the server sent for it."""
    connection = engine.raw_connection()
    driver: Any = connection.driver_connection
    notes: list[str] = []

    def note(diagnostic: Any) -> None:
        notes.append(f"{diagnostic.message_primary or ''} {diagnostic.message_detail or ''}")

    driver.add_notice_handler(note)
    try:
        driver.autocommit = True
        try:
            driver.execute(statement)
        finally:
            driver.autocommit = False
    finally:
        driver.remove_notice_handler(note)
        connection.close()
    return notes


def _raw(engine: Engine, statement: str) -> list[tuple[Any, ...]]:
    connection = engine.raw_connection()
    try:
        if not is_sqlite(engine):
            connection.driver_connection.autocommit = True  # type: ignore[union-attr]
        cursor = connection.cursor()
        try:
            cursor.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()
            if not is_sqlite(engine):
                connection.driver_connection.autocommit = False  # type: ignore[union-attr]
    finally:
        connection.close()
