"""The sandbox's state: one SQLite database, in memory unless a file is given.

One code path for both modes, so a test of the file mode also tests the memory mode.
Every id is an AUTOINCREMENT key, so ids only grow, across restarts and resets alike:
a client that keeps a ``StartingAfter`` cursor never sees an id twice.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from bridge.sandbox.config import SandboxConfig, Template
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

_TABLES = (
    "keys",
    "key_created_ns",
    "customers",
    "events",
    "web_api_log",
    "usage_records",
    "data_objects",
    "calls",
)

# Web API Log state codes (reference: model/WebAPILog).
KEY_CREATED = 3010
BLOCKED = 7013
UNBLOCKED = 7014
EXTENDED = 7015
NOTES_CHANGED = 7017
CUSTOMER_CHANGED = 7019
DATA_OBJECT_ADDED = 8011
DATA_OBJECT_REMOVED = 8012
DATA_OBJECTS_LISTED = 8013
INT_INCREMENTED = 8014
INT_DECREMENTED = 8015
INT_SET = 8016
STRING_SET = 8017

# A data object's ReferencerType.
USER, PRODUCT, KEY = 0, 1, 2

Paged = Literal["events", "web_api_log"]
# The integers SQLite can store; binding another one raises OverflowError.
SQLITE_INTEGERS = range(-(2**63), 2**63)
# gt/gte/lt/lte as in the Time filter; "eq" for a bare timestamp.
TimeFilter = dict[str, int]
_TIME_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "="}


@dataclass(frozen=True)
class KeyRecord:
    global_id: int
    product_id: int
    id: int
    key: str
    created: int
    expires: int
    period: int
    features: int  # bit i-1 holds F{i}
    notes: str
    block: int
    customer_id: int | None
    max_no_of_machines: int
    trial_activation: int
    template_id: int | None
    usage: int
    subscription_item: str | None

    def feature(self, number: int) -> bool:
        return bool(self.features >> (number - 1) & 1)


@dataclass(frozen=True)
class NewKey:
    """What a new key is made of: a template's parameters, or CreateKey's."""

    product_id: int
    period: int
    features: tuple[bool, ...]  # F1..F8
    notes: str = ""
    block: bool = False
    customer_id: int | None = None
    max_no_of_machines: int = 0
    trial_activation: bool = False
    template_id: int | None = None
    subscription: bool = False


@dataclass(frozen=True)
class CustomerRecord:
    id: int
    name: str
    email: str
    company_name: str
    created: int
    secret: str
    notes: str


@dataclass(frozen=True)
class DataObjectRecord:
    id: int
    referencer_type: int  # USER, PRODUCT or KEY
    referencer_id: int  # 0, a product id or a key's global id
    name: str | None
    string_value: str | None
    int_value: int


@dataclass(frozen=True)
class Page:
    """A cursor query on ``events`` or ``web_api_log``: equality filters plus ranges."""

    equals: dict[str, Any]
    limit: int
    starting_after: int = 0
    ending_before: int = 0
    time: TimeFilter | None = None
    contains: tuple[str, str] | None = None  # (column, text), case-insensitive
    states: Sequence[int] | None = None
    cursor: Literal["id", "time"] = "id"  # what StartingAfter/EndingBefore compare with


# Bytes below this are uniform modulo 26; the rest are drawn again.
_LETTER_BYTES = 256 // 26 * 26


def _new_key_string() -> str:
    """20 letters, each uniform and independent (as ``secrets.choice`` would give), from
    one read of the OS's generator rather than one per letter."""
    letters = ""
    while len(letters) < 20:
        letters += "".join(
            string.ascii_uppercase[b % 26] for b in secrets.token_bytes(24) if b < _LETTER_BYTES
        )
    return "-".join(letters[i : i + 5] for i in range(0, 20, 5))


def subscription_item_for(global_id: int) -> str:
    """The id of the Stripe subscription item a key is linked to when none is given."""
    return f"si_sandbox{global_id}"


class _Transaction:
    """``Store.transaction()``: a class, not a generator, as every call enters it several
    times. It keeps no state of its own, so one serves every (nested) use."""

    def __init__(self, store: Store) -> None:
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


class Store:
    def __init__(self, config: SandboxConfig, db_path: Path | None = None) -> None:
        self.config = config
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
        with self.transaction():
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._seed()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        """Hold the lock; the outermost block commits, or rolls back on an exception."""
        return self._transaction

    def _migrate(self) -> None:
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def _seed(self) -> None:
        if self._db.execute("SELECT COUNT(*) FROM customers").fetchone()[0]:
            return
        for customer in self.config.customers:
            self.add_customer(customer.name, customer.email, customer.company_name, "", 0)

    def reset(self) -> None:
        with self.transaction():
            for table in _TABLES:
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - constant names
            self._customers = None
            self._seed()

    # keys

    def create_key(self, template: Template, now: int) -> KeyRecord:
        """A key as CreateKeyFromTemplate makes it: the template's parameters, and a v2
        template's data objects."""
        spec = NewKey(
            product_id=template.product_id,
            period=template.period,
            features=template.features,
            notes=template.notes,
            max_no_of_machines=template.max_no_of_machines,
            trial_activation=template.trial_activation,
            template_id=template.id,
            subscription=template.subscription,
        )
        with self.transaction():
            record = self.new_key(spec, now)
            for obj in template.data_objects:
                self.add_data_object(
                    KEY, record.global_id, obj.name, obj.string_value, obj.int_value
                )
        return record

    def new_key(self, spec: NewKey, now: int) -> KeyRecord:
        """A new key of ``spec``, numbered per product (MAX(id) + 1) as the service does."""
        features = sum(1 << i for i, on in enumerate(spec.features) if on)
        with self.transaction():
            row = self._db.execute(
                "SELECT COALESCE(MAX(id), 0) + 1 FROM keys WHERE product_id = ?",
                (spec.product_id,),
            ).fetchone()
            while True:
                key = _new_key_string()
                try:
                    cursor = self._db.execute(
                        "INSERT INTO keys (product_id, id, key, created, expires, period,"
                        " features, notes, block, customer_id, max_no_of_machines,"
                        " trial_activation, template_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            spec.product_id,
                            row[0],
                            key,
                            now,
                            now + spec.period * 86400,
                            spec.period,
                            features,
                            spec.notes,
                            int(spec.block),
                            spec.customer_id,
                            spec.max_no_of_machines,
                            int(spec.trial_activation),
                            spec.template_id,
                        ),
                    )
                    break
                except sqlite3.IntegrityError:  # the one-in-26^20 collision
                    continue
            self._db.execute(
                "INSERT INTO key_created_ns (global_id, ns) VALUES (?, ?)",
                (cursor.lastrowid, time.time_ns()),
            )
            if spec.subscription:
                self._db.execute(
                    "UPDATE keys SET subscription_item = ? WHERE global_id = ?",
                    (subscription_item_for(int(cursor.lastrowid or 0)), cursor.lastrowid),
                )
            record = self.key_by_id(int(cursor.lastrowid or 0))
        assert record is not None
        return record

    def product_keys(
        self, product_id: int, offset: int = 0, limit: int | None = None
    ) -> list[KeyRecord]:
        """The product's keys in id order, ``limit`` of them from ``offset`` (all: None).
        GetKeys with a search query filters them all in Python; without one it reads a
        page here, so paging through 100,000 keys is not 1,000 reads of all of them."""
        with self.transaction():
            rows = self._db.execute(
                "SELECT * FROM keys WHERE product_id = ? ORDER BY id LIMIT ? OFFSET ?",
                (product_id, -1 if limit is None else limit, offset),
            ).fetchall()
        return [KeyRecord(**dict(row)) for row in rows]

    def count_product_keys(self, product_id: int) -> int:
        with self.transaction():
            row = self._db.execute(
                "SELECT COUNT(*) FROM keys WHERE product_id = ?", (product_id,)
            ).fetchone()
        return int(row[0])

    def key_by_id(self, global_id: int) -> KeyRecord | None:
        with self.transaction():
            row = self._db.execute("SELECT * FROM keys WHERE global_id = ?", (global_id,))
            found = row.fetchone()
        return KeyRecord(**dict(found)) if found else None

    def find_key(self, product_id: int, key: str) -> KeyRecord | None:
        with self.transaction():
            found = self._db.execute(
                "SELECT * FROM keys WHERE product_id = ? AND key = ?", (product_id, key)
            ).fetchone()
        return KeyRecord(**dict(found)) if found else None

    def update_key(self, record: KeyRecord, **changes: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in changes)
        with self.transaction():
            self._db.execute(
                f"UPDATE keys SET {columns} WHERE global_id = ?",  # noqa: S608 - our names
                (*changes.values(), record.global_id),
            )

    def record_usage(self, record: KeyRecord, amount: int, now: int) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE keys SET usage = usage + ? WHERE global_id = ?",
                (amount, record.global_id),
            )
            self._db.execute(
                "INSERT INTO usage_records (product_id, key, amount, time) VALUES (?, ?, ?, ?)",
                (record.product_id, record.key, amount, now),
            )

    def link_subscription_item(self, record: KeyRecord, item: str | None) -> None:
        self.update_key(record, subscription_item=item)

    # data objects

    def add_data_object(
        self,
        referencer_type: int,
        referencer_id: int,
        name: str | None,
        string_value: str | None,
        int_value: int,
    ) -> DataObjectRecord:
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO data_objects (referencer_type, referencer_id, name, string_value,"
                " int_value) VALUES (?, ?, ?, ?, ?)",
                (referencer_type, referencer_id, name, string_value, int_value),
            )
            found = self.data_object(int(cursor.lastrowid or 0))
        assert found is not None
        return found

    def data_object(self, object_id: int) -> DataObjectRecord | None:
        if object_id not in SQLITE_INTEGERS:
            return None  # no data object has such an id
        with self.transaction():
            row = self._db.execute("SELECT * FROM data_objects WHERE id = ?", (object_id,))
            found = row.fetchone()
        return DataObjectRecord(**dict(found)) if found else None

    def data_objects(
        self, referencer: tuple[int, int] | None = None, contains: str | None = None
    ) -> list[DataObjectRecord]:
        """The data objects of one referencer (type, id), or all; in id order. ``contains``
        keeps those whose name contains it, ignoring case."""
        where: list[str] = []
        args: list[Any] = []
        if referencer is not None:
            where.append("referencer_type = ? AND referencer_id = ?")
            args.extend(referencer)
        if contains:
            where.append("instr(lower(COALESCE(name, '')), ?) > 0")
            args.append(contains.lower())
        sql = "SELECT * FROM data_objects"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self.transaction():
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [DataObjectRecord(**dict(row)) for row in rows]

    def count_data_objects(self) -> int:
        with self.transaction():
            return int(self._db.execute("SELECT COUNT(*) FROM data_objects").fetchone()[0])

    def update_data_object(self, record: DataObjectRecord, **changes: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in changes)
        with self.transaction():
            self._db.execute(
                f"UPDATE data_objects SET {columns} WHERE id = ?",  # noqa: S608 - our names
                (*changes.values(), record.id),
            )

    def remove_data_object(self, record: DataObjectRecord) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM data_objects WHERE id = ?", (record.id,))

    # customers

    def add_customer(
        self, name: str, email: str, company_name: str, notes: str, now: int
    ) -> CustomerRecord:
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO customers (name, email, company_name, created, secret, notes)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, email, company_name, now, secrets.token_hex(16), notes),
            )
            # Read back, so the record holds what SQLite stored.
            found = self._db.execute(
                "SELECT * FROM customers WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
            customer = CustomerRecord(**dict(found))
            if self._customers is not None:
                self._customers.add(customer)
        return customer

    def customer(self, customer_id: int) -> CustomerRecord | None:
        if customer_id not in SQLITE_INTEGERS:
            # What the SQL lookup this replaced did (an HTTP 500), so no answer changes.
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        with self.transaction():
            return self._customer_index().get(customer_id)

    def customers(self) -> list[CustomerRecord]:
        """Every customer, in id order."""
        with self.transaction():
            return self._customer_index().all()

    def customers_containing(self, needle: str) -> list[CustomerRecord]:
        """A superset, in id order, of the customers with ``needle`` (lower-cased) in their
        name, company name, email or secret, lower-cased (``CustomerIndex.containing``)."""
        with self.transaction():
            return self._customer_index().containing(needle)

    def _customer_index(self) -> CustomerIndex:
        # A file may have a second writer (another sandbox on it); SQLite's data_version
        # changes when another connection commits, and a rebuild then picks that up.
        # A memory database is this connection's alone.
        if self.path is not None:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                self._customers, self._data_version = None, version
        if self._customers is None:
            index = CustomerIndex()
            for row in self._db.execute("SELECT * FROM customers ORDER BY id"):
                index.add(CustomerRecord(**dict(row)))
            self._customers = index
        return self._customers

    # analytics

    def add_event(self, event: dict[str, Any]) -> int:
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO events (product_id, key, machine_code, feature_name, event_name,"
                " value, currency, metadata, time) VALUES (:product_id, :key, :machine_code,"
                " :feature_name, :event_name, :value, :currency, :metadata, :time)",
                event,
            )
        return int(cursor.lastrowid or 0)

    def log(
        self,
        record: KeyRecord | None,
        state: int,
        ip: str,
        now: int,
        *,
        product_id: int = 0,
        do_id: int = 0,
        do_int_value: int = 0,
    ) -> None:
        """A Web API Log entry about ``record``, or about no key (``product_id``, if any)."""
        if record is not None:
            product_id = record.product_id
        with self.transaction():
            self._db.execute(
                "INSERT INTO web_api_log (product_id, key, ip, time, state, machine_code,"
                " friendly_name, do_id, do_int_value) VALUES (?, ?, ?, ?, ?, '', '', ?, ?)",
                (product_id, record.key if record else "", ip, now, state, do_id, do_int_value),
            )

    def page(self, table: Paged, query: Page) -> list[dict[str, Any]]:
        """Rows after ``starting_after`` ascending, or before ``ending_before`` descending
        (the service orders by id descending when EndingBefore is given)."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in query.equals.items():
            where.append(f"{column} = ?")
            args.append(value)
        if query.starting_after:
            where.append(f"{query.cursor} > ?")
            args.append(query.starting_after)
        if query.ending_before:
            where.append(f"{query.cursor} < ?")
            args.append(query.ending_before)
        for op, value in (query.time or {}).items():
            where.append(f"time {_TIME_OPS[op]} ?")
            args.append(value)
        if query.contains:
            column, text = query.contains
            where.append(f"instr(lower({column}), ?) > 0")
            args.append(text.lower())
        if query.states is not None:
            where.append(f"state IN ({', '.join('?' * len(query.states))})")
            args.extend(query.states)
        sql = f"SELECT * FROM {table}"  # noqa: S608 - table, columns and ops are our constants
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if query.ending_before else "ASC"
        sql += f" ORDER BY {query.cursor} {order}, id {order} LIMIT ?"
        args.append(query.limit)
        with self.transaction():
            return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    # inspection

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
