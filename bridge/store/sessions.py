"""Signed-in admin sessions, kept in the database so that signing out ends one for good.

The operator's cookie holds a random session id; the ``admin_session`` table holds only
its SHA-256 and when it expires, so the table yields nothing that signs anyone in. Every
web process (``serve --workers``) reads the same rows: a session ended in one is ended in
all, and a copied cookie is worth nothing once its session is. Only a signed-in session
has a row: the login form's pre-session lives in the cookie alone, so strangers write
nothing here. This module is the table's only writer.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Engine, bindparam, text

from bridge.store.db import transaction
from bridge.store.dbapi import aware

_TIME = DateTime(timezone=True)
_OPEN = text(
    "INSERT INTO admin_session (id_hash, created_at, expires_at) VALUES (:id, :now, :until)"
).bindparams(bindparam("now", type_=_TIME), bindparam("until", type_=_TIME))
# Sessions nobody signed out of: dropped at the next sign-in, so the table stays small.
_PURGE = text("DELETE FROM admin_session WHERE expires_at <= :now").bindparams(
    bindparam("now", type_=_TIME)
)
_FIND = text("SELECT expires_at FROM admin_session WHERE id_hash = :id").columns(expires_at=_TIME)
_CLOSE = text("DELETE FROM admin_session WHERE id_hash = :id")


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(engine: Engine, *, now: datetime, lifetime: int) -> str:
    """A new session, valid ``lifetime`` seconds from ``now``; returns its id (for the
    cookie only: it is stored nowhere)."""
    session_id = secrets.token_urlsafe(32)
    with transaction(engine) as connection:
        connection.execute(_PURGE, {"now": now})
        until = now + timedelta(seconds=lifetime)
        connection.execute(_OPEN, {"id": _digest(session_id), "now": now, "until": until})
    return session_id


def is_open(engine: Engine, session_id: str, *, now: datetime) -> bool:
    with transaction(engine) as connection:  # SQLite: queue on the process's lock
        expires_at = connection.execute(_FIND, {"id": _digest(session_id)}).scalar()
    return isinstance(expires_at, datetime) and aware(expires_at) > now


def close(engine: Engine, session_id: str) -> None:
    """End the session (signing out); a session already ended stays ended."""
    with transaction(engine) as connection:
        connection.execute(_CLOSE, {"id": _digest(session_id)})
