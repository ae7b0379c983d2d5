"""The sandbox's SQLite database: its schema (with the columns added since), and the
connection with its lock and (nested) transactions that every part of the store shares."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from bridge.sandbox.customer_index import CustomerIndex

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    global_id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    key TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    period INTEGER NOT NULL,
    features INTEGER NOT NULL,
    notes TEXT NOT NULL,
    block INTEGER NOT NULL,
    customer_id INTEGER,
    max_no_of_machines INTEGER NOT NULL,
    trial_activation INTEGER NOT NULL,
    template_id INTEGER,
    usage INTEGER NOT NULL DEFAULT 0
);
-- CreateKeyFromTemplate numbers keys per product (MAX(id) + 1): without this, a scan.
CREATE INDEX IF NOT EXISTS keys_by_product ON keys (product_id, id);
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    company_name TEXT NOT NULL,
    created INTEGER NOT NULL,
    secret TEXT NOT NULL UNIQUE,
    notes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    machine_code TEXT NOT NULL,
    feature_name TEXT NOT NULL,
    event_name TEXT NOT NULL,
    value INTEGER NOT NULL,
    currency TEXT NOT NULL,
    metadata TEXT NOT NULL,
    time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS web_api_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    ip TEXT NOT NULL,
    time INTEGER NOT NULL,
    state INTEGER NOT NULL,
    machine_code TEXT NOT NULL,
    friendly_name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    amount INTEGER NOT NULL,
    time INTEGER NOT NULL
);
-- Wall-clock creation time in ns, for latency measurements (``created`` has the
-- service's one-second resolution). A table of its own, so older files gain it.
CREATE TABLE IF NOT EXISTS key_created_ns (
    global_id INTEGER PRIMARY KEY,
    ns INTEGER NOT NULL
);
-- Data objects of the user (0), a product (1) or a key (2, by its global id).
CREATE TABLE IF NOT EXISTS data_objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    referencer_type INTEGER NOT NULL,
    referencer_id INTEGER NOT NULL,
    name TEXT,
    string_value TEXT,
    int_value INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS data_objects_by_referencer
    ON data_objects (referencer_type, referencer_id);
CREATE TABLE IF NOT EXISTS calls (
    method TEXT PRIMARY KEY,
    received INTEGER NOT NULL DEFAULT 0,
    applied INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0
);
"""

# Columns added after their table: ``_migrate`` adds them to files written before them,
# and to new files too, so both take one path.
_ADDED_COLUMNS = (
    # The Stripe subscription item recurring billing linked the key to (RecordUsage).
    ("keys", "subscription_item", "TEXT"),
    # The Web API Log's DOId and DOIntValue (0 when the call was not on a data object).
    ("web_api_log", "do_id", "INTEGER NOT NULL DEFAULT 0"),
    ("web_api_log", "do_int_value", "INTEGER NOT NULL DEFAULT 0"),
)

TABLES = (
    "keys",
    "key_created_ns",
    "customers",
    "events",
    "web_api_log",
    "usage_records",
    "data_objects",
    "calls",
)


class _Transaction:
    """``Database.transaction()``: a class, not a generator, as every call enters it several
    times. It keeps no state of its own, so one serves every (nested) use."""

    def __init__(self, store: Database) -> None:
        self._store = store

    def __enter__(self) -> None:
        store = self._store
        store._lock.acquire()
        store._depth += 1

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        store = self._store
        try:
            if store._depth == 1:
                if kind is None:
                    store._db.commit()
                else:
                    store._db.rollback()
                    store._customers = None  # it may hold a customer that was rolled back
        finally:
            store._depth -= 1
            store._lock.release()


class Database:
    """The connection, its lock and its transactions, and the schema's creation."""

    def __init__(self, db_path: Path | None) -> None:
        self.path = db_path
        # One connection shared by the event loop and the test thread that built the app;
        # the lock serialises them.
        self._db = sqlite3.connect(str(db_path) if db_path else ":memory:", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._transaction = _Transaction(self)
        # Customers are read far more than written (GetCustomers before every
        # AddCustomer), so they are also kept in memory; None means "rebuild from SQL".
        self._customers: CustomerIndex | None = None
        self._data_version: int | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        """Hold the lock; the outermost block commits, or rolls back on an exception."""
        return self._transaction

    def _create(self) -> None:
        """The tables, and the columns added since (call it in a transaction)."""
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
