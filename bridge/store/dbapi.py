"""Transactions on the driver's own connection, for the statements a job runs every time.

A job runs a handful of short transactions. Through SQLAlchemy each one paid for a pool
checkout with its event hooks, a ``Transaction`` object and, per statement, a cache-key
walk and result wrapping: about four times what SQLite takes to run the SQL. Here a
statement is plain SQL written once, with ``:name`` parameters, rendered per dialect the
first time it runs, and executed on the DBAPI cursor. Everything else stays as
``bridge.store.db`` sets it up: the same engine and pool, SQLite's ``BEGIN IMMEDIATE`` and the
per-process writer lock, and driver errors raised as SQLAlchemy's (what callers catch).

Values cross as SQLAlchemy would bind and read them (:func:`Tx.time`, :func:`aware`), so
rows written here and through the ORM are the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from itertools import chain
from typing import Any

from sqlalchemy import DateTime, Dialect, Engine
from sqlalchemy.exc import DBAPIError, StatementError

from bridge.store.db import is_sqlite, writer_lock

_PARAM = re.compile(r"(?<![:\w]):(\w+)")


class Sql:
    """One statement, written with ``:name`` parameters; ``{for_update}`` marks where
    PostgreSQL takes row locks (SQLite's BEGIN IMMEDIATE already holds the database), and
    ``{skip_locked}`` where it takes them but passes over rows another transaction holds."""

    __slots__ = ("_rendered", "text")

    def __init__(self, text: str) -> None:
        self.text = " ".join(text.split())
        self._rendered: dict[str, str] = {}

    def render(self, dialect: str) -> str:
        rendered = self._rendered.get(dialect)
        if rendered is None:
            if dialect == "sqlite":
                rendered = self.text.replace(" {for_update}", "").replace(" {skip_locked}", "")
            else:
                text = self.text.replace("{for_update}", "FOR UPDATE")
                text = text.replace("{skip_locked}", "FOR UPDATE SKIP LOCKED")
                rendered = _PARAM.sub(r"%(\1)s", text)
            self._rendered[dialect] = rendered
        return rendered


@dataclass(frozen=True)
class _Binding:
    name: str
    bind_time: Any  # datetime -> what the driver stores
    read_time: Any  # what the driver returns -> datetime


@cache
def _binding(dialect: Dialect) -> _Binding:
    column = DateTime(timezone=True).dialect_impl(dialect)
    bind = column.bind_processor(dialect)
    read = column.result_processor(dialect, None)
    return _Binding(
        name="sqlite" if dialect.name == "sqlite" else "postgresql",
        bind_time=bind if bind is not None else (lambda value: value),
        read_time=read if read is not None else (lambda value: value),
    )


class Tx:
    """The statements of one transaction. Rows are plain tuples, in the SELECT's order."""

    __slots__ = ("_binding", "_cursor", "dialect")

    def __init__(self, cursor: Any, binding: _Binding) -> None:
        self._cursor = cursor  # also for callers with SQL of their own: ``cursor``
        self._binding = binding
        self.dialect = binding.name

    def run(self, sql: Sql, params: Mapping[str, Any] | None = None) -> int:
        """Execute; returns the number of rows changed."""
        self._cursor.execute(sql.render(self.dialect), params or {})
        rowcount: int = self._cursor.rowcount
        return rowcount

    def one(self, sql: Sql, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        self._cursor.execute(sql.render(self.dialect), params or {})
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        if row is not None:
            # RETURNING on SQLite: the statement completes only once its rows are read.
            self._cursor.fetchall()
        return row

    def all(self, sql: Sql, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql.render(self.dialect), params or {})
        rows: list[tuple[Any, ...]] = self._cursor.fetchall()
        return rows

    @property
    def mark(self) -> str:
        """The driver's positional placeholder, for :func:`insert_rows`."""
        return "?" if self.dialect == "sqlite" else "%s"

    @property
    def cursor(self) -> Any:
        """The driver's cursor, for statements built at run time (multi-row inserts)."""
        return self._cursor

    def time(self, value: datetime | None) -> Any:
        """A datetime as this driver stores it (SQLite: SQLAlchemy's text format)."""
        return None if value is None else self._binding.bind_time(value)

    def read_time(self, value: Any) -> datetime | None:
        """A stored datetime back, timezone-aware (SQLite's are written in UTC)."""
        if value is None:
            return None
        return aware(self._binding.read_time(value))


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@contextmanager
def tx(engine: Engine, *, setup: Callable[[Any], None] | None = None) -> Iterator[Tx]:
    """One transaction on a pooled driver connection: committed when the block ends,
    rolled back if it raises. Driver errors, connecting included, come out as
    SQLAlchemy's ``DBAPIError``s, and a connection the error shows broken is dropped from
    the pool, as SQLAlchemy would. ``setup`` runs once per pooled connection, on its
    cursor, before its first transaction here (a caller's own pragmas)."""
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    binding = _binding(dialect)
    with writer_lock(engine):
        try:
            connection = engine.raw_connection()
        except dbapi_error as exc:
            raise _wrapped(exc, dialect, invalidated=False) from exc
        cursor = None
        try:
            cursor = connection.cursor()
            if setup is not None and setup not in connection.info:
                setup(cursor)
                connection.info[setup] = True
            if is_sqlite(engine):
                # The driver is in autocommit mode (bridge.store.db); take the write lock first,
                # so that two writers never both read before writing.
                cursor.execute("BEGIN IMMEDIATE")
            yield Tx(cursor, binding)
            connection.commit()
        except BaseException as exc:
            broken = isinstance(exc, dbapi_error) and dialect.is_disconnect(
                exc, connection.dbapi_connection, cursor
            )
            if broken:
                connection.invalidate(exc)
            else:
                with suppress(dbapi_error):
                    connection.rollback()
            if isinstance(exc, dbapi_error):
                raise _wrapped(exc, dialect, invalidated=broken) from exc
            raise
        finally:
            if cursor is not None:
                with suppress(dbapi_error):
                    cursor.close()
            connection.close()


def _wrapped(exc: Exception, dialect: Dialect, *, invalidated: bool) -> StatementError:
    """A driver error as SQLAlchemy raises it (IntegrityError, OperationalError, ...)."""
    return DBAPIError.instance(
        None,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        dialect=dialect,
        connection_invalidated=invalidated,
    )


# Rows per INSERT: far below SQLite's (32766) and PostgreSQL's (65535) parameter limits.
ROWS_PER_STATEMENT = 500


@cache
def _statement(head: str, tail: str, mark: str, width: int, rows: int) -> str:
    group = "(" + ",".join([mark] * width) + ")"
    return f"{head} VALUES {','.join([group] * rows)} {tail}"


def insert_rows(t: Tx, head: str, rows: list[tuple[Any, ...]], tail: str) -> list[Any]:
    """``head VALUES (...), (...) tail``, a chunk of rows at a time; the RETURNING rows.

    Built once per shape (only placeholders are joined in; values are bound): through
    the ORM the statements of a batch of deliveries cost ten times its commit."""
    returned: list[Any] = []
    if not rows:
        return returned
    width = len(rows[0])
    cursor = t.cursor
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        cursor.execute(
            _statement(head, tail, t.mark, width, len(chunk)), list(chain.from_iterable(chunk))
        )
        if cursor.description is not None:
            returned.extend(cursor.fetchall())
    return returned
