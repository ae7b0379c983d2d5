"""Erasure of one person's address, and the names and companies stored with it.

Every column that holds what senders sent or what was derived from it is searched
(:data:`TARGETS`): delivery bodies, intents' params, results and errors, start hints,
attempts' details, refusal records. A row is found by a cheap SQL prefilter (the address
in any case, percent-encoded, or any text holding an escape) read in chunks outside any
write transaction, judged decoded in Python (``bridge.core.personal``), and rewritten in
one short transaction per chunk, re-read under the write lock, so that the worker and
the webhooks interleave with a long run. Ids, statuses, types and times are never
touched: a redelivery of an erased event is still a duplicate and every effect's record
stays. Expired customer leases named by the address are deleted.

Then nothing of the old values may remain in the files:

* SQLite: the rewriting connection runs with ``secure_delete=ON`` (freed space and pages
  zeroed), the WAL is checkpointed and truncated, and the database file and WAL are read
  back for the address; if a copy is still there (space freed earlier by a connection
  without ``secure_delete``), the database is ``VACUUM``-ed and read again.
* PostgreSQL: the tables touched are rewritten (``VACUUM FULL``), so that the old row
  versions go from the files, not only from the rows.
  Its WAL, replicas and backups are outside the bridge's reach (the README says so).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, String, Text
from sqlmodel import SQLModel

from bridge.core.personal import Address, erased_json, erased_text
from bridge.store import tables as models
from bridge.store.db import is_sqlite
from bridge.store.dbapi import Sql, tx
from bridge.store.erasure_files import settle_sqlite, vacuum

CHUNK = 2000  # rows read per scan step
_ESCAPE = "!"


@dataclass(frozen=True)
class Target:
    table: str
    key: str
    column: str
    kind: str  # "body", "json" or "text"


#: Where a sender's data (or something derived from it) is stored as text.
TARGETS = (
    Target("webhook_event", "id", "payload", "body"),
    Target("webhook_event", "id", "note", "text"),
    Target("intent", "id", "params", "json"),
    Target("intent", "id", "result", "json"),
    Target("intent", "id", "last_error", "text"),
    Target("start_hint", "id", "params", "json"),
    Target("attempt", "id", "detail", "json"),
    Target("delivery_log", "id", "detail", "text"),
    Target("delivery_log", "id", "external_id", "text"),
)

_UNFINISHED = ("pending", "waiting", "running")


@dataclass
class Erasure:
    """What ``forget`` changed (or, in a dry run, would change)."""

    address: str
    dry_run: bool
    rows: dict[str, int] = field(default_factory=dict)  # "table.column" -> rows
    events: list[str] = field(default_factory=list)  # "provider:external id"
    intents: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # intents that lose their buyer
    leases: int = 0  # expired customer leases deleted
    held_leases: int = 0  # customer leases held right now (not deleted)
    kept: dict[str, int] = field(default_factory=dict)  # ids naming it: "table.column" -> rows
    vacuumed: list[str] = field(default_factory=list)
    files_checked: list[str] = field(default_factory=list)
    files_clean: bool | None = None  # None: the files could not be read (PostgreSQL)

    @property
    def changed(self) -> int:
        return sum(self.rows.values()) + self.leases


def forget(
    engine: Engine, address: Address, *, dry_run: bool = False, full_vacuum: bool = True
) -> Erasure:
    """Erase ``address`` from every stored text; with ``dry_run``, only say where it is.
    ``full_vacuum`` (PostgreSQL): rewrite the touched tables (``VACUUM FULL``), locking
    each for its rewrite; a plain VACUUM frees the old row versions without that lock,
    but their bytes stay in the pages' free space until it is reused."""
    result = Erasure(address.text, dry_run)
    for target in TARGETS:
        _erase_column(engine, target, address, result)
    _leases(engine, address, result)
    result.kept = _identifiers(engine, address)
    if dry_run:
        return result
    touched = sorted(
        {name.split(".")[0] for name in result.rows} | ({"lock"} if result.leases else set())
    )
    if is_sqlite(engine):
        settled = settle_sqlite(engine, address)
        if settled.vacuumed:
            result.vacuumed = ["(the whole database)"]
        result.files_checked, result.files_clean = settled.files_checked, settled.files_clean
    else:
        vacuum(engine, touched, full=full_vacuum)
        result.vacuumed = [f"{t} (full)" if full_vacuum else t for t in touched]
    return result


# -- the columns ----------------------------------------------------------------------------


def _prefilter(address: Address, column: str) -> tuple[str, dict[str, Any]]:
    """SQL that keeps the rows that may hold the address (both databases). SQLite's
    ``lower`` folds ASCII only, so a non-ASCII address is judged in Python on every row."""
    backslash = f"{column} LIKE :backslash ESCAPE '{_ESCAPE}'"
    params: dict[str, Any] = {"backslash": "%\\%"}
    if not address.text.isascii():
        return "1 = 1", {}
    likes = [backslash]
    for i, form in enumerate(address.forms):
        likes.append(f"lower({column}) LIKE :form{i} ESCAPE '{_ESCAPE}'")
        params[f"form{i}"] = f"%{_like(form)}%"
    return "(" + " OR ".join(likes) + ")", params


def _like(text: str) -> str:
    return (
        text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


def _erased(target: Target, value: str, address: Address) -> str | None:
    if target.kind == "text":
        return erased_text(value, address)
    return erased_json(value, address, body=target.kind == "body")


def _chunks(engine: Engine, target: Target) -> Iterator[tuple[Any, Any]]:
    """(after, upto] key ranges of about :data:`CHUNK` rows, along the primary key."""
    t, k = target.table, _q(target.key)
    after: Any = None
    while True:
        where = "" if after is None else f"WHERE {k} > :after"
        bound = Sql(f"SELECT {k} FROM {t} {where} ORDER BY {k} LIMIT 1 OFFSET :skip")  # noqa: S608
        row = _read(engine, bound, {"after": after, "skip": CHUNK - 1})
        upto = row[0][0] if row else None
        yield after, upto
        if upto is None:
            return
        after = upto


def _q(name: str) -> str:
    return f'"{name}"'


def _erase_column(engine: Engine, target: Target, address: Address, result: Erasure) -> None:
    t, k, c = target.table, _q(target.key), _q(target.column)
    test, params = _prefilter(address, c)
    for after, upto in _chunks(engine, target):
        bounds = [f"{c} IS NOT NULL", test]
        if after is not None:
            bounds.append(f"{k} > :after")
        if upto is not None:
            bounds.append(f"{k} <= :upto")
        scan = Sql(f"SELECT {k} FROM {t} WHERE {' AND '.join(bounds)}")  # noqa: S608
        found = [row[0] for row in _read(engine, scan, {**params, "after": after, "upto": upto})]
        if found:
            _rewrite(engine, target, found, address, result)


def _rewrite(
    engine: Engine, target: Target, keys: list[Any], address: Address, result: Erasure
) -> None:
    """Re-read ``keys``' values under the write lock and erase the address from them."""
    t, k, c = target.table, _q(target.key), _q(target.column)
    read = Sql(f"SELECT {c} FROM {t} WHERE {k} = :key")  # noqa: S608
    write = Sql(f"UPDATE {t} SET {c} = :value WHERE {k} = :key")  # noqa: S608
    setup = _secure_delete if is_sqlite(engine) else None
    with tx(engine, setup=setup) as x:
        for key in keys:
            row = x.one(read, {"key": key})
            if row is None or row[0] is None:
                continue
            erased = _erased(target, row[0], address)
            if erased is None:
                continue
            name = f"{target.table}.{target.column}"
            result.rows[name] = result.rows.get(name, 0) + 1
            _note(x, target, key, result)
            if not result.dry_run:
                x.run(write, {"value": erased, "key": key})


_EVENT = Sql("SELECT provider, external_id FROM webhook_event WHERE id = :id")
_STATUS = Sql("SELECT status FROM intent WHERE id = :id")


def _note(x: Any, target: Target, key: Any, result: Erasure) -> None:
    """Name the event or intent a changed row belongs to (ids are no personal data)."""
    if target.table == "webhook_event":
        row = x.one(_EVENT, {"id": key})
        if row is not None and f"{row[0]}:{row[1]}" not in result.events:
            result.events.append(f"{row[0]}:{row[1]}")
    elif target.table == "intent" and key not in result.intents:
        result.intents.append(key)
        row = x.one(_STATUS, {"id": key})
        if target.column == "params" and row is not None and row[0] in _UNFINISHED:
            result.unfinished.append(key)


# -- leases and identifiers ------------------------------------------------------------------


def _leases(engine: Engine, address: Address, result: Erasure) -> None:
    """Customer leases were named by the address before they were named by its digest
    (``jobs.effects.customers``); one a crashed worker left behind still names it."""
    test, params = _prefilter(address, "name")
    rows = _read(engine, Sql(f"SELECT name, until FROM lock WHERE {test}"), params)  # noqa: S608
    names = [name for name, _ in rows if address.in_text(name)]
    if not names:
        return
    drop = Sql("DELETE FROM lock WHERE name = :name AND until < :now")
    with tx(engine) as x:
        now = x.time(models.utcnow())
        for name in names:
            if result.dry_run or x.run(drop, {"name": name, "now": now}) > 0:
                result.leases += 1
            else:
                result.held_leases += 1


def _identifiers(engine: Engine, address: Address) -> dict[str, int]:
    """Rows of every other text column that still spell the address (ids, refs, keys a
    sender chose): reported, not changed, since exactly-once keys on them."""
    targets = {(t.table, t.column) for t in TARGETS} | {("lock", "name")}
    found: dict[str, int] = {}
    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            if not isinstance(column.type, String | Text) or (table.name, column.name) in targets:
                continue
            name = f'"{column.name}"'
            likes = " OR ".join(
                f"lower({name}) LIKE :f{i} ESCAPE '{_ESCAPE}'" for i in range(len(address.forms))
            )
            params = {f"f{i}": f"%{_like(form)}%" for i, form in enumerate(address.forms)}
            count = Sql(f"SELECT count(*) FROM {table.name} WHERE {likes}")  # noqa: S608
            n = int(_read(engine, count, params)[0][0])
            if n:
                found[f"{table.name}.{column.name}"] = n
    return found


# -- the files ---------------------------------------------------------------------------


def _secure_delete(cursor: Any) -> None:
    cursor.execute("PRAGMA secure_delete=ON")


def _read(engine: Engine, sql: Sql, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """A read outside any write transaction (SQLite: no write lock taken)."""
    dialect = "sqlite" if is_sqlite(engine) else "postgresql"
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(sql.render(dialect), params)
            rows = [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()
        connection.rollback()
        return rows
    finally:
        connection.close()
