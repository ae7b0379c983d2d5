"""A chaos run's database: a fresh one per run, and the few reads the run and the check
make of it."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bridge.store.db import migrate


@contextlib.contextmanager
def fresh_database(workdir: Path, admin_url: str | None) -> Any:
    """A migrated, empty database for one run: SQLite in ``workdir``, or a new PostgreSQL
    database on the server of ``admin_url`` (dropped afterwards)."""
    if admin_url is None:
        url = f"sqlite:///{workdir / 'bridge.db'}"
        migrate(url)
        yield url
        return
    import psycopg

    admin = make_url(admin_url)
    name = f"chaos_{secrets.token_hex(4)}"
    conninfo = (
        f"host={admin.host} port={admin.port or 5432} user={admin.username} "
        f"dbname={admin.database or 'postgres'}"
    )
    if admin.password:
        conninfo += f" password={admin.password}"
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rows(database_url: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params or {}))
    finally:
        engine.dispose()


def unfinished(database_url: str) -> int:
    sql = "SELECT COUNT(*) FROM intent WHERE status IN ('pending', 'running', 'waiting')"
    return int(rows(database_url, sql)[0][0])
