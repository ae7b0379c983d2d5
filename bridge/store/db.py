"""The database engine (SQLite by default, PostgreSQL in production) and its migrations.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit is durable against a
process crash (what the exactly-once design needs) without an fsync per webhook. Machine
power loss can drop the last commits; production runs PostgreSQL.

SQLite has one writer at a time, and a writer that finds the database locked sleeps in
SQLite's busy handler (1, 2, 5, 10 ms...). Threads of one process therefore queue on a
Python lock per engine instead (no sleeping, first come first served in practice); the
busy handler is left for the other processes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy import Engine as Engine  # the handle every layer passes to the store
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the only PostgreSQL driver we install)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # The most recently used connection first: a connection whose database another
            # connection changed since its last transaction rereads the pages it caches.
            pool_use_lifo=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN until the first write, which
        # lets two writers read the same state; BEGIN IMMEDIATE takes the write lock first.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see make_engine)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # A row rewritten (an intent's params, a pruned body) leaves no stale copy in its
    # page: ``forget`` can then vouch for the file (bridge.store.erasure).
    cursor.execute("PRAGMA secure_delete=FAST")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


#: What any store call raises when the database fails it (unreachable, locked, refused):
#: the web answers 503 and the worker retries, without knowing SQLAlchemy's tree.
StoreError = SQLAlchemyError


def ping(engine: Engine) -> None:
    """One round trip (``/readyz``): raises :data:`StoreError` when the database is away."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


_writers: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_writers_guard = threading.Lock()


def writer_lock(engine: Engine) -> threading.RLock | nullcontext[None]:
    """The lock this process's SQLite transactions take (a no-op for PostgreSQL)."""
    if not is_sqlite(engine):
        return nullcontext()
    lock = _writers.get(engine)
    if lock is None:
        with _writers_guard:
            lock = _writers.setdefault(engine, threading.RLock())
    return lock


@contextmanager
def session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with writer_lock(engine), Session(engine, expire_on_commit=False) as s, s.begin():
        yield s


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A Core connection in one transaction: the worker's hot paths, where the ORM's
    per-statement cost is most of a job's CPU."""
    with writer_lock(engine), engine.begin() as connection:
        yield connection


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    alembic_command.upgrade(alembic_config(url), "head")


def shown(url: str) -> str:
    """``url`` fit to print: its password masked."""
    return make_url(url).render_as_string()
